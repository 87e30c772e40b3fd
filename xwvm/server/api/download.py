"""Streaming a blob to the client with ETag and single-range HTTP Range support."""

from __future__ import annotations

from urllib.parse import quote

from flask import Response, request
from werkzeug.datastructures import Range

from xwvm.errors import RangeNotSatisfiable
from xwvm.server.blobs import BlobStore


def blob_response(store: BlobStore, sha256: str, size: int, filename: str) -> Response:
    etag = f'"{sha256}"'
    # Names are free text: an ASCII fallback without quotes or control characters, and the
    # exact name percent-encoded (RFC 6266), so that no name breaks or injects a header.
    plain = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    headers = {"ETag": etag, "Accept-Ranges": "bytes",
               "Content-Disposition": f"attachment; filename=\"{plain}\"; "
                                      f"filename*=UTF-8''{quote(filename, safe='')}",
               "X-Content-SHA256": sha256}
    if request.headers.get("If-None-Match") == etag:
        return Response(status=304, headers=headers)
    start, end, status = 0, size - 1, 200
    rng = request.range
    if_range = request.headers.get("If-Range")
    if rng is not None and (if_range is None or if_range == etag):
        if rng.units != "bytes" or len(rng.ranges) != 1:
            raise RangeNotSatisfiable("only one byte range per request is supported")
        first, last = rng.ranges[0]
        if first < 0 and size and -first > size:  # a suffix longer than the blob: all of it
            rng = Range("bytes", [(0, last)])
        bounds = rng.range_for_length(size)
        if bounds is None:
            raise RangeNotSatisfiable(f"range {request.headers.get('Range')} is outside "
                                      f"the {size} bytes of this blob")
        start, end, status = bounds[0], bounds[1] - 1, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1 if size else 0)
    body = store.read_range(sha256, start, end) if size else iter(())
    return Response(body, status=status, headers=headers,
                    mimetype="application/octet-stream", direct_passthrough=True)
