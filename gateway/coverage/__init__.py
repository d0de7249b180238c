"""The coverage dashboard: which kindergartens are fully connected, partly, or not at all (README "Coverage").

:mod:`~gateway.coverage.model` (status rules), :mod:`~gateway.coverage.history` (the daily
rate from the status history) and :mod:`~gateway.coverage.uplink` (RTP loss over 24 h) are
pure; :mod:`~gateway.coverage.store` holds the SQL of both backends, and
:mod:`~gateway.coverage.service` gathers the inputs on the event loop.
"""
