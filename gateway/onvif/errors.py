"""Errors of ONVIF discovery and profile lookup, each with the zh-CN sentence the API shows.

The HTTP routes answer with :attr:`OnvifError.message_zh` (and the English reason for
logs); none of them ever carries a password. ``status_hint`` is the HTTP status the
API answers with: a camera that refused the credentials is the caller's problem (422),
one that is not reachable or not ONVIF is a bad gateway (502), silence is 504.
"""

from __future__ import annotations

from gateway.errors import GatewayError

__all__ = [
    "DiscoveryParseError",
    "NotOnvifError",
    "OnvifAddressError",
    "OnvifAuthError",
    "OnvifError",
    "OnvifFault",
    "OnvifProtocolError",
    "OnvifTimeout",
    "OnvifUnreachable",
]


class OnvifError(GatewayError):
    """Root of the ONVIF errors; ``message_zh`` is what an operator reads."""

    kind: str = "error"  # stable code for the API and the console
    status_hint: int = 502
    message_zh: str = "ONVIF 操作失败"

    def __init__(self, reason: str, *, message_zh: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if message_zh is not None:
            self.message_zh = message_zh


class OnvifAddressError(OnvifError, ValueError):
    """An XAddr or host we refuse to contact (not http(s), credentials in it, no host, too long)."""

    status_hint = 400
    kind = "address"
    message_zh = "设备地址无效:须为 http:// 或 https:// 开头的 ONVIF 设备服务地址"


class OnvifAuthError(OnvifError):
    """The camera refused the user name or password (SOAP ter:NotAuthorized, HTTP 401/403)."""

    status_hint = 422
    kind = "auth"
    message_zh = "用户名或密码错误,摄像机拒绝访问"


class NotOnvifError(OnvifError):
    """Something answered, but not as an ONVIF device service (HTML, 404, no SOAP envelope)."""

    kind = "not_onvif"
    message_zh = "该地址不是 ONVIF 设备(没有 ONVIF 设备服务应答)"


class OnvifUnreachable(OnvifError):
    """Nothing listens there (connection refused, no route, DNS)."""

    kind = "unreachable"
    message_zh = "无法连接摄像机:地址或端口不可达"


class OnvifTimeout(OnvifError):
    """The camera did not answer in time."""

    status_hint = 504
    kind = "timeout"
    message_zh = "摄像机响应超时"


class OnvifProtocolError(OnvifError, ValueError):
    """A reply that claims to be ONVIF but breaks our limits or the schema (too large, missing fields)."""

    kind = "protocol"
    message_zh = "摄像机的 ONVIF 应答无法解析"


class OnvifFault(OnvifError):
    """The camera answered a SOAP Fault other than NotAuthorized (``code`` is its subcode, e.g. ter:ActionNotSupported)."""

    kind = "fault"
    message_zh = "摄像机返回 ONVIF 错误"

    def __init__(self, reason: str, *, code: str = "") -> None:
        super().__init__(reason, message_zh=f"摄像机返回 ONVIF 错误:{code or reason}"[:200])
        self.code = code


class DiscoveryParseError(OnvifError, ValueError):
    """A WS-Discovery datagram we do not accept; ``drop`` names why (a ``wsdiscovery.Drop`` value)."""

    kind = "discovery"
    message_zh = "WS-Discovery 应答无效"

    def __init__(self, reason: str, *, drop: str) -> None:
        super().__init__(reason)
        self.drop = drop
