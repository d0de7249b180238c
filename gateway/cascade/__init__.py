"""Cascade: the gateway as a lower platform towards the district, municipal and police platforms.

:mod:`.policy` decides what each upper platform may see (catalog, channels,
alarms) and builds the catalog tree it is shown. Import from the submodules;
this package deliberately re-exports nothing so that importing it can never
create an import cycle with the registry, alarm or protocol packages.
"""
