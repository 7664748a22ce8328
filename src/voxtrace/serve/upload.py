"""Streaming multipart upload into a private temporary file, with the size limit enforced while reading.

The body is parsed chunk by chunk as it arrives (python-multipart), so an oversize upload is refused as soon
as it crosses the limit, never after it has been read whole. The uploaded file lands in a fresh directory
only this process can read (`tempfile.mkdtemp`), under a fixed name: the client's file name is kept for
messages only and never becomes a path.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

# Suffix hints for the decoders; anything else is stored without a suffix (decoders sniff the content).
KNOWN_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".webm", ".mp4", ".aiff", ".au"}
FORM_OVERHEAD = 64 * 1024  # bytes of multipart headers and small fields allowed beyond the file limit


class UploadError(Exception):
    """The request cannot be used; `status` is the HTTP status to answer with, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    """The stored file: `path` (private, fixed name), `filename` (the client's, for display) and `size`."""

    path: Path
    filename: str
    size: int


def display_name(raw: str | None) -> str:
    """The client's file name reduced to a safe label: last path component, printable, at most 100 chars."""
    name = re.split(r"[\\/]", raw or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:100] or "upload"


class _FilePart:
    """python-multipart callbacks that write the part named `field` to `target`, counting its bytes."""

    def __init__(self, field: str, target: Path, max_bytes: int):
        self.field, self.target, self.max_bytes = field, target, max_bytes
        self.header_field, self.header_value, self.headers = b"", b"", {}
        self.handle = None
        self.filename = None
        self.size = 0
        self.found = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": lambda data, start, end: self._append("header_field", data[start:end]),
            "on_header_value": lambda data, start, end: self._append("header_value", data[start:end]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def _append(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def part_begin(self) -> None:
        self.headers = {}

    def header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field, self.header_value = b"", b""

    def headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        if params.get(b"name", b"").decode("utf-8", "replace") != self.field or self.found:
            return
        self.found = True
        self.filename = params.get(b"filename", b"").decode("utf-8", "replace")
        self.handle = open(self.target, "wb")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.handle is None:
            return
        self.size += end - start
        if self.size > self.max_bytes:
            raise UploadError(413, f"upload too large: more than the {_mb(self.max_bytes)} MB limit")
        self.handle.write(data[start:end])

    def part_end(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:g}"


async def receive_upload(request, field: str, max_bytes: int) -> tuple[Upload, str]:
    """Stream the multipart body of `request` and store its part `field`; returns `(upload, tmp_dir)`.

    The caller removes `tmp_dir`. Raises `UploadError` (413 over the limit, 422 for a malformed request, a
    missing part or an empty file).
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UploadError(422, f"expected a multipart/form-data request with a file in the field {field!r}")
    max_body = max_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        size_mb = int(declared) / 2**20
        raise UploadError(413, f"upload too large: {size_mb:.1f} MB is over the {_mb(max_bytes)} MB limit")
    tmp_dir = tempfile.mkdtemp(prefix="voxtrace-upload-")
    try:
        part = _FilePart(field, Path(tmp_dir) / "upload", max_bytes)
        parser = MultipartParser(boundary, part.callbacks())
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_body:
                    raise UploadError(413, f"upload too large: more than the {_mb(max_bytes)} MB limit")
                parser.write(chunk)
            parser.finalize()
        except MultipartParseError as err:
            raise UploadError(422, f"malformed multipart body: {err}") from None
        finally:
            part.part_end()
        if not part.found:
            raise UploadError(422, f"no file in the form field {field!r}")
        filename = display_name(part.filename)
        if part.size == 0:
            raise UploadError(422, f"{filename}: empty file (0 bytes)")
        suffix = Path(filename).suffix.lower()
        path = part.target
        if suffix in KNOWN_SUFFIXES:
            path = path.rename(path.with_suffix(suffix))
        return Upload(path=path, filename=filename, size=part.size), tmp_dir
    except BaseException:
        remove_upload(tmp_dir)
        raise


def remove_upload(tmp_dir: str) -> None:
    """Delete a directory made by `receive_upload`."""
    shutil.rmtree(tmp_dir, ignore_errors=True)

