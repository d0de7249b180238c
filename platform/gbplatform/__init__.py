"""The monitoring-platform role (district, municipal, police) and the staff console.

* :mod:`gbplatform.app` composes a platform node on the gateway's services;
* :mod:`gbplatform.lower_catalogs` applies lower platforms' catalog trees and NOTIFYs;
* :mod:`gbplatform.ids` gives the platforms' default SIP IDs;
* :mod:`gbplatform.console_routes` serves the zh-CN console (``console/``), on
  every role's HTTP port.

This package lives in ``platform/gbplatform`` and ``platform/`` has no
``__init__.py`` on purpose: ``platform`` is a standard-library module name.
"""
