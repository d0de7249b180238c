"""The monitoring platform role (district, municipal, police), composed on the gateway's node.

To a platform a lower platform looks like a device with a large catalog, so
a platform is the same node as the access gateway (``gateway.app``) with what
only a platform does: it learns its lower platforms' trees and follows their
catalog NOTIFYs (:class:`~gbplatform.lower_catalogs.LowerPlatformCatalogs`),
and it serves the staff console. Its SIP ID is of type 200 (``gbplatform.ids``).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.app import GatewayService
from gateway.config import GatewayConfig
from gateway.httpapi.app import WebPart
from gateway.registry.store import Store
from gbplatform.console_routes import add_console_routes
from gbplatform.lower_catalogs import LowerPlatformCatalogs

__all__ = ["build_gateway", "build_platform"]


def build_gateway(
    config: GatewayConfig, *, store: Store | None = None, web_parts: Sequence[WebPart] = ()
) -> GatewayService:
    """The access gateway with the staff console (``kgw gateway``): devices' flat catalogs only."""
    return GatewayService(config, store=store, web_parts=(add_console_routes, *web_parts))


def build_platform(
    config: GatewayConfig, *, store: Store | None = None, web_parts: Sequence[WebPart] = ()
) -> GatewayService:
    """A platform node: lower platforms' trees and NOTIFYs applied, the console served."""
    return GatewayService(
        config, store=store, catalogs=LowerPlatformCatalogs(), web_parts=(add_console_routes, *web_parts)
    )
