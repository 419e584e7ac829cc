#!/usr/bin/env python3
"""serve.py: the static server for the built site (_site/), standard library only.

    python serve.py                      # builds _site/ if missing or stale, serves http://127.0.0.1:8000/
    python serve.py --port 0 --root DIR  # any folder, a free port

What it does, and why:
- GET and HEAD; single byte ranges (`a-b`, `a-`, `-n`) answer 206 so model
  weights can stream tensor by tensor; unsatisfiable ranges 416; malformed or
  multi-range headers get the whole file (RFC 9110 lets a server ignore them).
- ETag / Last-Modified with RFC 9110's conditionals in its order: If-Match and
  If-Unmodified-Since (412), If-None-Match and If-Modified-Since (304), If-Range.
- Cross-origin isolation (COOP/COEP/CORP) and a strict Content-Security-Policy
  that still lets WebAssembly compile ('wasm-unsafe-eval').
  `--embed-origin ORIGIN` (repeatable, or `*`) lets those origins frame the
  embed page (embed.html): its frame-ancestors lists them and its CORP becomes
  cross-origin, which a cross-origin-isolated host page requires.
  `--frame-origin ORIGIN` (repeatable) lets this site's pages frame ORIGIN
  (CSP frame-src): the embed example hosting an rwkvweb served elsewhere.
- `--mount PREFIX=DIR` serves another folder (your models) at /PREFIX/, under the same rules.
- Never serves outside its root: `..` segments, encoded or not, and symlinks
  that resolve outside give 403; directories have no listings.
- Fails well (tests/test_serve_fuzz.py): every response, errors included, carries the
  security headers and a plain-text body; request bodies are refused (400, connection
  closed: a GET body is never read as a second request); a client gets HEADER_SECONDS to
  send its headers and IDLE_SECONDS between requests; at most MAX_CONNECTIONS at once (503
  beyond); log lines escape control characters; redirects are always origin-relative.
- Every request is recorded (method, path, range, status, bytes) in
  `server.requests`, and with `--log FILE` as JSON lines, for tests to read.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.path.join(HERE, "_site")
EMBED_PAGE = "/embed.html"
VM_PAGE = "/vm.html"
CHEERPX_ORIGIN = "https://cxrtnc.leaningtech.com"  # CheerpX's CDN: its Community License allows use only from there
CHUNK = 1 << 20
HEADER_SECONDS = 10  # to send the request line and headers (a slow-loris client is cut off)
IDLE_SECONDS = 60  # of silence on a connection (between requests, or a stalled read/write)
MAX_CONNECTIONS = 128  # at once; a browser opens ~6 per host, the tests up to 64
MAX_DIGITS = 18  # a byte position longer than this is past any file (and int() refuses > 4300 digits)

MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".wgsl": "text/wgsl; charset=utf-8",  # the media type registered by the WGSL specification
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".tar": "application/x-tar",
    ".safetensors": "application/octet-stream",
    ".st": "application/octet-stream",
    ".pth": "application/octet-stream",
    ".bin": "application/octet-stream",
}

# 'wasm-unsafe-eval' lets WebAssembly.compile run (Pyodide) without allowing JS eval.
# connect-src: model URLs on other origins (hubs over https:, a model server on this machine);
# fetch() is all it allows, and the page reads only model bytes that way (web/net/range.js).
MODEL_ORIGINS = "https: http://localhost:* http://127.0.0.1:*"
# ws: on loopback: the remote page (web/remote.js) connects back to the Python process driving it.
BRIDGE_ORIGINS = "ws://localhost:* ws://127.0.0.1:*"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; "
    f"connect-src 'self' {MODEL_ORIGINS} {BRIDGE_ORIGINS}; "
    "img-src 'self' data: blob:; style-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
)


@dataclass
class RequestRecord:
    method: str
    path: str
    range: str | None
    status: int
    bytes_sent: int
    time: float


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) for a single satisfiable byte range; None to send the whole file.

    Raises RangeNotSatisfiable for a well-formed range that starts past the end.
    """
    if not header or not header.startswith("bytes="):
        return None
    spec = header[len("bytes=") :].strip()
    if "," in spec or "-" not in spec:
        return None  # multi-range or garbage: the whole file is a valid answer
    first, last = (part.strip(" \t") for part in spec.split("-", 1))
    # ASCII digits only: str.isdigit() also accepts '²', which int() then refuses
    if (
        not (_DIGITS.fullmatch(first) or first == "")
        or not (_DIGITS.fullmatch(last) or last == "")
        or first == last == ""
    ):
        return None
    if first == "":  # suffix: the last n bytes
        n = _position(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - n), size
    start = _position(first)
    if last != "" and _position(last) < start:
        return None  # a-b with b < a is invalid syntax: ignore it
    if start >= size:
        raise RangeNotSatisfiable
    end = size - 1 if last == "" else min(_position(last), size - 1)
    return start, end + 1


_DIGITS = re.compile(r"[0-9]+")


def _position(digits: str) -> int:
    """A byte position; one with more than MAX_DIGITS digits is past any file, so it stands as 10**MAX_DIGITS."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= MAX_DIGITS else 10**MAX_DIGITS


def security_headers(server, url_path: str) -> dict[str, str]:
    """The headers every response carries, errors and redirects included."""
    embeddable = url_path == EMBED_PAGE and server.embed_origins
    ancestors = " ".join(["'self'", *server.embed_origins]) if embeddable else "'self'"
    return {
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Embedder-Policy": "require-corp",
        "Cross-Origin-Resource-Policy": "cross-origin" if embeddable else "same-origin",
        "Content-Security-Policy": f"{_policy(url_path)}; frame-ancestors {ancestors}{_frame_src(server)}",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def _policy(url_path: str) -> str:
    """The site's CSP; the VM page alone may also run CheerpX's engine from its CDN (web/vm.js: never vendored)."""
    if url_path != VM_PAGE:
        return CONTENT_SECURITY_POLICY
    return CONTENT_SECURITY_POLICY.replace("script-src 'self'", f"script-src 'self' {CHEERPX_ORIGIN}").replace(
        "worker-src 'self'", f"worker-src 'self' {CHEERPX_ORIGIN} blob:"
    )


def _frame_src(server) -> str:
    """The origins this site's pages may frame (--frame-origin: an example host page embedding an app elsewhere)."""
    origins = getattr(server, "frame_origins", ())
    return f"; frame-src 'self' {' '.join(origins)}" if origins else ""


# Log lines escape C0/C1 control characters (terminal escapes in a request line stay inert).
_CONTROL_CHARS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


class SiteServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address,
        root: str,
        embed_origins=(),
        log_file: str | None = None,
        quiet: bool = False,
        mounts=None,
        header_seconds: float = HEADER_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
        frame_origins=(),
    ):
        super().__init__(address, SiteHandler)
        self.header_seconds, self.idle_seconds = header_seconds, idle_seconds
        self._slots = threading.BoundedSemaphore(max_connections)
        self.errors: list[BaseException] = []  # exceptions that escaped a handler: bugs (the fuzz test wants none)
        self.root = os.path.realpath(root)
        # URL prefix -> folder, e.g. {"models": "/data/rwkv"} serves /models/x.st from /data/rwkv/x.st
        self.mounts = {prefix.strip("/"): os.path.realpath(folder) for prefix, folder in (mounts or {}).items()}
        self.embed_origins = list(embed_origins)
        self.frame_origins = list(frame_origins)
        self.quiet = quiet
        self.requests: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._log_file = open(log_file, "a", encoding="utf-8") if log_file else None

    def handle_error(self, request, client_address) -> None:
        """A browser that closes a connection (a tab closed mid-download) or a client that goes
        silent is normal, not a traceback; anything else is a bug, kept for the tests to see."""
        error = sys.exc_info()[1]
        if isinstance(error, (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return
        self.errors.append(error)
        super().handle_error(request, client_address)

    def process_request(self, request, client_address) -> None:
        """A thread per connection, up to MAX_CONNECTIONS; beyond, a 503 at once and the connection closed."""
        if not self._slots.acquire(blocking=False):
            self._refuse_busy(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread was started to release it
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse_busy(self, request) -> None:
        body = b"503 too many connections; retry shortly\n"
        head = [
            "HTTP/1.1 503 Service Unavailable",
            "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Retry-After: 1",
            "Connection: close",
            *(f"{k}: {v}" for k, v in security_headers(self, "").items()),
        ]
        try:
            request.settimeout(1)
            request.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        except OSError:
            pass
        self.shutdown_request(request)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def record(self, entry: RequestRecord) -> None:
        with self._log_lock:
            self.requests.append(entry)
            if self._log_file:
                self._log_file.write(json.dumps(asdict(entry)) + "\n")
                self._log_file.flush()

    def server_close(self) -> None:
        super().server_close()
        if self._log_file:
            self._log_file.close()


class SiteHandler(BaseHTTPRequestHandler):
    server: SiteServer
    protocol_version = "HTTP/1.1"
    server_version = "rwkvweb-serve"
    sys_version = ""

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    # --- the connection: timeouts, protocol errors -----------------------------

    def setup(self) -> None:
        self.timeout = self.server.idle_seconds  # socketserver applies it to every read and write
        self._timer = None
        super().setup()

    def handle_one_request(self) -> None:
        """Wait up to IDLE_SECONDS for a request to start, then HEADER_SECONDS for its headers."""
        try:
            if not self.rfile.peek(1):
                self.close_connection = True
                return
        except (TimeoutError, ConnectionError, OSError):
            self.close_connection = True
            return
        self._headers_late = False
        self._timer = threading.Timer(self.server.header_seconds, self._cut_slow_headers)
        self._timer.daemon = True
        self._timer.start()
        try:
            super().handle_one_request()
        finally:
            self._timer.cancel()

    def _cut_slow_headers(self) -> None:
        self._headers_late = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)  # the blocked read returns; the connection ends
        except OSError:
            pass

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        if self._timer is not None:
            self._timer.cancel()
        if getattr(self, "_headers_late", False):
            self.close_connection = True
            return False
        if parsed and self.request_version == "HTTP/0.9":  # no headers in 0.9: refuse in 1.0, with them
            self.request_version = "HTTP/1.0"
            self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "HTTP/0.9 requests are not supported")
            return False
        return parsed

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The library's errors (400, 414, 431, 501, 505...) as ours: plain text, security headers, and
        the connection closed, since after a malformed request its framing cannot be trusted."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # the default until a version is parsed: answer with a status line
            self.request_version = "HTTP/1.0"
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._send_error(code, message or phrase, None)

    # --- resolving the path -------------------------------------------------

    def _url_path(self) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(self.path).path, errors="strict")

    def _resolve(self, url_path: str) -> tuple[int, str | None]:
        """(status, file path): 200 with a file inside the root, or 301/403/404."""
        if "\x00" in url_path or "\\" in url_path:
            return HTTPStatus.FORBIDDEN, None
        segments = [s for s in url_path.split("/") if s not in ("", ".")]
        if ".." in segments:
            return HTTPStatus.FORBIDDEN, None
        root = self.server.root
        if segments and segments[0] in self.server.mounts:
            root, segments = self.server.mounts[segments[0]], segments[1:]
        candidate = os.path.realpath(os.path.join(root, *segments))
        if os.path.commonpath([candidate, root]) != root:
            return HTTPStatus.FORBIDDEN, None  # a symlink pointing out of the root
        if os.path.isdir(candidate):
            if not url_path.endswith("/"):
                return HTTPStatus.MOVED_PERMANENTLY, None
            return (
                self._resolve(url_path + "index.html")
                if os.path.isfile(os.path.join(candidate, "index.html"))
                else (HTTPStatus.NOT_FOUND, None)
            )
        if not os.path.isfile(candidate) or url_path.endswith("/"):  # /file/ names a folder that is not there
            return HTTPStatus.NOT_FOUND, None
        return HTTPStatus.OK, candidate

    # --- answering ----------------------------------------------------------

    def _serve(self, send_body: bool) -> None:
        range_header = self.headers.get("Range")
        if self._has_body():
            self.close_connection = True  # its bytes are unread: never parse them as the next request
            return self._send_error(HTTPStatus.BAD_REQUEST, f"{self.command} requests take no body", range_header)
        try:
            url_path = self._url_path()
        except UnicodeDecodeError:
            return self._send_error(HTTPStatus.BAD_REQUEST, "path is not valid UTF-8", range_header)
        status, path = self._resolve(url_path)
        if status == HTTPStatus.MOVED_PERMANENTLY:
            return self._send_redirect(urllib.parse.urlsplit(self.path).path + "/", range_header)
        if path is None:
            return self._send_error(
                status, "not found" if status == HTTPStatus.NOT_FOUND else "forbidden", range_header
            )
        try:
            file = open(path, "rb")
        except OSError:  # removed or unreadable since it was resolved
            return self._send_error(HTTPStatus.NOT_FOUND, "not found", range_header)
        with file:
            self._answer(file, url_path, path, range_header, send_body)

    def _answer(self, file, url_path: str, path: str, range_header: str | None, send_body: bool) -> None:
        stat = os.fstat(file.fileno())
        size, etag = stat.st_size, f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        last_modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
        if self._precondition_failed(etag, stat.st_mtime):
            return self._send_error(
                HTTPStatus.PRECONDITION_FAILED,
                "precondition failed (If-Match / If-Unmodified-Since)",
                range_header,
                {"ETag": etag, "Last-Modified": last_modified},
            )
        if self._not_modified(etag, stat.st_mtime):
            return self._send_headers(
                HTTPStatus.NOT_MODIFIED, url_path, path, etag, last_modified, None, range_header, 0
            )
        byte_range = None
        if self._if_range_holds(etag, last_modified):
            try:
                byte_range = parse_range(range_header, size)
            except RangeNotSatisfiable:
                self._send_headers(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                    url_path,
                    path,
                    etag,
                    last_modified,
                    0,
                    range_header,
                    0,
                    extra={"Content-Range": f"bytes */{size}"},
                )
                return
        start, end = byte_range or (0, size)
        status = HTTPStatus.PARTIAL_CONTENT if byte_range else HTTPStatus.OK
        extra = {"Content-Range": f"bytes {start}-{end - 1}/{size}"} if byte_range else {}
        sent = end - start if send_body else 0
        self._send_headers(status, url_path, path, etag, last_modified, end - start, range_header, sent, extra=extra)
        if send_body:
            self._copy(file, start, end)

    def _has_body(self) -> bool:
        """A body announced by Transfer-Encoding, or a Content-Length other than 0 (or not a number)."""
        length = self.headers.get_all("Content-Length") or []
        return "Transfer-Encoding" in self.headers or any(value.strip() != "0" for value in length)

    def _precondition_failed(self, etag: str, mtime: float) -> bool:
        """RFC 9110 13.2.2 steps 1-2: If-Match (strong comparison), else If-Unmodified-Since."""
        if_match = self.headers.get("If-Match")
        if if_match is not None:
            tags = [t.strip() for t in if_match.split(",")]
            return not ("*" in tags or etag in tags)
        since = self._parse_date(self.headers.get("If-Unmodified-Since"))
        return since is not None and int(mtime) > since

    def _not_modified(self, etag: str, mtime: float) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
            return "*" in tags or etag in tags
        since = self._parse_date(self.headers.get("If-Modified-Since"))
        return since is not None and int(mtime) <= since

    def _if_range_holds(self, etag: str, last_modified: str) -> bool:
        """If-Range: honour the Range only while the validator still matches (strong comparison)."""
        validator = self.headers.get("If-Range")
        if validator is None:
            return True
        validator = validator.strip()
        return validator == etag if validator.startswith('"') else validator == last_modified

    @staticmethod
    def _parse_date(value: str | None) -> float | None:
        """An HTTP date as a timestamp; None for anything else (RFC 9110: an invalid date is ignored)."""
        if not value or len(value) > 64:
            return None
        try:
            parsed = email.utils.parsedate_to_datetime(value)
            return parsed.timestamp() if parsed.tzinfo else None
        except (TypeError, ValueError, IndexError, OverflowError):  # e.g. the year 99999999999
            return None

    def _security_headers(self, url_path: str) -> dict[str, str]:
        return security_headers(self.server, url_path)

    def _send_headers(self, status, url_path, path, etag, last_modified, length, range_header, sent, extra=None):
        self.send_response(status)
        if length is not None:
            self.send_header(
                "Content-Type", MIME_TYPES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")
            )
            self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        self.send_header("Cache-Control", "no-cache")  # always revalidate: cheap with ETags, never stale
        for name, value in {**self._security_headers(url_path), **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self._record(status, range_header, sent)

    def _send_error(self, status: int, message: str, range_header: str | None, extra: dict | None = None) -> None:
        body = f"{int(status)} {message[:200].translate(_CONTROL_CHARS)}\n".encode(
            "utf-8", "replace"
        )  # messages may quote the request
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        for name, value in {**self._security_headers(""), **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._record(status, range_header, 0)

    def _send_redirect(self, location: str, range_header: str | None) -> None:
        # "/" + the path without its leading slashes: "//host/x" (absolute-form or not) must not become a
        # scheme-relative redirect to another host; quote() keeps anything odd out of the header
        location = urllib.parse.quote("/" + location.lstrip("/"), safe="/%:@!$&'()*+,;=-._~")
        self.send_response(HTTPStatus.MOVED_PERMANENTLY)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        for name, value in self._security_headers("").items():
            self.send_header(name, value)
        self.end_headers()
        self._record(HTTPStatus.MOVED_PERMANENTLY, range_header, 0)

    def _copy(self, file, start: int, end: int) -> None:
        try:
            file.seek(start)
            remaining = end - start
            while remaining:
                chunk = file.read(min(CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client aborted (e.g. a cancelled fetch) or stalled: not our error

    def _record(self, status: int, range_header: str | None, sent: int) -> None:
        command, path = getattr(self, "command", None) or "", getattr(self, "path", "")
        self.server.record(RequestRecord(command, path, range_header, int(status), sent, time.time()))

    def log_message(self, format: str, *args) -> None:
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} {(format % args).translate(_CONTROL_CHARS)}\n")


def make_server(root: str = DEFAULT_ROOT, host: str = "127.0.0.1", port: int = 8000, **options) -> SiteServer:
    return SiteServer((host, port), root, **options)


def serve_in_thread(root: str, **options) -> SiteServer:
    """Start a server on a free port in a daemon thread (tests, the CLI's browser backend)."""
    server = make_server(root, port=0, quiet=True, **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    parser.add_argument("--root", default=DEFAULT_ROOT, help="folder to serve (default: the built site, _site/)")
    parser.add_argument(
        "--embed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="an origin allowed to frame embed.html (repeatable, or *)",
    )
    parser.add_argument(
        "--frame-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="an origin this site's pages may frame (repeatable)",
    )
    parser.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="PREFIX=DIR",
        help="also serve DIR at /PREFIX/ (e.g. models=~/rwkv), repeatable",
    )
    parser.add_argument("--log", help="append a JSON line per request to this file")
    parser.add_argument(
        "--max-connections", type=int, default=MAX_CONNECTIONS, help=f"at once; beyond, 503 (default {MAX_CONNECTIONS})"
    )
    parser.add_argument("--no-build", action="store_true", help="serve _site/ as it is, even if stale")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if os.path.realpath(args.root) == os.path.realpath(DEFAULT_ROOT) and not args.no_build:
        from build import site

        if site.is_stale():
            print("building the site into _site/ ...", flush=True)
            site.build()
    if not os.path.isdir(args.root):
        parser.error(f"--root {args.root!r} is not a folder")
    mounts = dict(m.split("=", 1) for m in args.mount if "=" in m)
    if len(mounts) != len(args.mount) or not all(os.path.isdir(d) for d in mounts.values()):
        parser.error(f"--mount wants PREFIX=DIR with an existing DIR, got {args.mount}")
    if args.max_connections < 1:
        parser.error("--max-connections must be at least 1")
    server = make_server(
        args.root,
        args.host,
        args.port,
        embed_origins=args.embed_origin,
        frame_origins=args.frame_origin,
        log_file=args.log,
        quiet=args.quiet,
        mounts=mounts,
        max_connections=args.max_connections,
    )
    print(f"serving {server.root} at {server.url}  (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
