"""Download file names (kindergarten, camera, local time, safe characters) and Content-Disposition (RFC 5987)."""

from __future__ import annotations

import urllib.parse
from datetime import datetime
from pathlib import Path

from gateway.downloads import download_directory, download_filename
from gateway.httpapi.download_routes import content_disposition


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())  # local time, as the name shows it


def test_name_has_kindergarten_camera_and_local_times() -> None:
    name = download_filename("和平区第三幼儿园", "大门口", _epoch("2026-12-06T07:59:30"), _epoch("2026-12-06T08:00:30"))
    assert name == "和平区第三幼儿园_大门口_20261206-075930_20261206-080030.mp4"


def test_camera_named_after_its_kindergarten_is_not_repeated() -> None:
    start = _epoch("2026-12-06T07:59:30")
    name = download_filename("和平区第三幼儿园", "和平区第三幼儿园·大门口", start, start + 60)
    assert name.startswith("和平区第三幼儿园_大门口_")


def test_unsafe_characters_never_reach_the_name() -> None:
    start = _epoch("2026-12-06T07:59:30")
    name = download_filename('../../etc/passwd\x00 "x"', "a/b\\c:d*e?f<g>h|i\r\nj", start, start + 1)
    stem = name.removesuffix(".mp4")
    assert not any(c in stem for c in '/\\:*?"<>|\x00\r\n ') and ".." not in stem.split("_")[0][:2]
    assert Path(name).name == name


def test_empty_names_fall_back() -> None:
    start = _epoch("2026-12-06T07:59:30")
    assert download_filename("", "", start, start + 1).startswith("幼儿园_摄像机_20261206-075930")


def test_content_disposition_has_ascii_fallback_and_rfc5987_name() -> None:
    name = "和平区第三幼儿园_大门口_20261206-075930_20261206-080030.mp4"
    header = content_disposition(name, 'kgw_1201_x";.mp4')
    assert header.startswith('attachment; filename="kgw_1201_x__.mp4"; ')
    encoded = header.split("filename*=UTF-8''", 1)[1]
    assert encoded.isascii() and " " not in encoded and urllib.parse.unquote(encoded) == name


def test_directory_beside_the_database_or_temporary() -> None:
    assert download_directory("/srv/kgw/dl", "var/kgw.db") == Path("/srv/kgw/dl")
    assert download_directory("", "/data/kgw.db") == Path("/data/downloads")
    assert download_directory("", "sqlite:////data/kgw.db") == Path("/data/downloads")
    assert download_directory("", ":memory:") is None
    assert download_directory("", "postgresql://db/kgw") == Path("var/downloads")
