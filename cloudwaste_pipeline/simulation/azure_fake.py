"""A local fake of the Azure endpoints the scanner calls, served over HTTPS on loopback.

The scanner runs its real SDK clients against it (``ResourceGraphClient``, ``MetricsClient``,
``LogsQueryClient``, an ARM pipeline, ``DefaultAzureCredential``), pointed here the way a
sovereign cloud is configured: ``CLOUDWASTE_AZURE_*_ENDPOINT``. The credential finds the fake's
token endpoint as App Service's managed identity (``IDENTITY_ENDPOINT`` / ``IDENTITY_HEADER``),
and ``REQUESTS_CA_BUNDLE`` makes the SDKs trust the fake's self-signed certificate (Azure's
bearer-token policy refuses plain HTTP, rightly).

It serves a ``simulation.azure_estate`` plan and enforces what the real services enforce and the
scanner must cope with: Resource Graph pages of at most ``page_size`` rows with skip tokens,
at most 50 resource ids of one subscription per metrics batch, bearer tokens on every call,
``403`` for a forbidden subscription, and ``429`` + ``Retry-After`` when told to throttle.
It understands only the scanner's own queries (``INVENTORY_QUERY``, ``ACTIVITY_QUERY``).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import secrets
import ssl
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from cloudwaste_pipeline.scanning.azure import (
    ACTIVITY_QUERY,
    INVENTORY_QUERY,
    MAX_RESOURCES_PER_BATCH,
    RESOURCE_TYPES,
    Endpoints,
)
from cloudwaste_pipeline.simulation.azure_estate import AzureResource, hourly_metric

log = logging.getLogger(__name__)
TOKEN_PATH = "/msi/token"
METRIC_UNITS = {
    "Percentage CPU": "Percent",
    "Network In Total": "Bytes",
    "Network Out Total": "Bytes",
}


class FakeAzure:
    """The fake tenant; ``with fake.serving(): ...`` runs it and points the SDKs at it."""

    def __init__(
        self,
        resources: list[AzureResource],
        now: datetime,
        seed: int = 11,
        page_size: int = 1000,
        forbidden: set[str] | None = None,
        throttle: dict[str, int] | None = None,
        latency: float = 0.0,
    ) -> None:
        self.resources = resources
        self.now = now
        self.seed = seed
        self.page_size = page_size
        self.forbidden = {s.lower() for s in forbidden or ()}
        self.throttle = Counter(throttle or {})  # route -> how many requests still get a 429
        self.latency = latency  # seconds added to every answer: a remote service's round trip
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._secret = secrets.token_hex(16)
        self.url = ""

    # -- the estate --------------------------------------------------------------------------

    def live(self) -> list[AzureResource]:
        """What exists at the fake's ``now`` (the simulation moves it day by day)."""
        return [r for r in self.resources if r.exists_at(self.now)]

    def by_id(self) -> dict[str, AzureResource]:
        return {r.resource_id.lower(): r for r in self.live()}

    # -- serving -----------------------------------------------------------------------------

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(arm=self.url, metrics=self.url, logs=self.url)

    def environment(self, ca_file: Path) -> dict[str, str]:
        return {
            "CLOUDWASTE_AZURE_ARM_ENDPOINT": self.url,
            "CLOUDWASTE_AZURE_METRICS_ENDPOINT": self.url,
            "CLOUDWASTE_AZURE_LOGS_ENDPOINT": self.url,
            "IDENTITY_ENDPOINT": self.url + TOKEN_PATH,
            "IDENTITY_HEADER": self._secret,
            "REQUESTS_CA_BUNDLE": str(ca_file),
        }

    @contextmanager
    def serving(self) -> Iterator[FakeAzure]:
        """Serve on a free loopback port; the SDK environment variables point here meanwhile."""
        cert, key = _certificate()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        names = [*self.environment(cert), "AZURE_CLIENT_ID", "MSI_ENDPOINT"]
        saved = {name: os.environ.get(name) for name in names}
        for name in ("AZURE_CLIENT_ID", "MSI_ENDPOINT"):
            os.environ.pop(name, None)
        os.environ.update(self.environment(cert))
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    # -- routes ------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        route = _route(method, path)
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            self.calls[route] += 1
            if self.throttle[route] > 0:
                self.throttle[route] -= 1
                self.throttled[route] += 1
                return 429, {"Retry-After": "1"}, _error("TooManyRequests", "Rate limit exceeded.")
        if route == "token":
            if headers.get("X-IDENTITY-HEADER") != self._secret:
                return 401, {}, _error("Unauthorized", "missing identity header")
            expires = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
            resource = query.get("resource", "")
            token = {"access_token": f"fake-{secrets.token_hex(8)}", "expires_on": str(expires)}
            return 200, {}, {**token, "resource": resource, "token_type": "Bearer"}
        if not str(headers.get("Authorization", "")).startswith("Bearer fake-"):
            return 401, {}, _error("AuthenticationFailed", "no bearer token")
        payload = json.loads(body or b"{}") if body else {}
        if route == "resourcegraph":
            return self._resource_graph(payload)
        if route == "metrics":
            return self._metrics(path, query, payload)
        if route == "logs":
            return self._logs(path, payload)
        if route == "instance_view":
            return self._instance_view(path)
        return 404, {}, _error("NotFound", f"the fake does not serve {method} {path}")

    def _resource_graph(self, payload: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        if payload.get("query") != INVENTORY_QUERY:
            return 400, {}, _error("BadRequest", "the fake only answers the scanner's query")
        subscriptions = [s.lower() for s in payload.get("subscriptions") or []]
        for subscription in subscriptions:
            if subscription in self.forbidden:
                return (
                    403,
                    {},
                    _error(
                        "AuthorizationFailed",
                        "The client does not have authorization to perform action "
                        f"'Microsoft.ResourceGraph/resources/read' over scope "
                        f"'/subscriptions/{subscription}'.",
                    ),
                )
        rows = sorted(
            (
                r.row_at(self.now)
                for r in self.live()
                if r.row["subscriptionId"].lower() in subscriptions
                and r.row["type"].lower() in RESOURCE_TYPES
            ),
            key=lambda row: row["id"],
        )
        options = payload.get("options") or {}
        top = min(int(options.get("$top") or 1000), 1000, self.page_size)
        offset = 0
        if options.get("$skipToken"):
            offset = json.loads(base64.b64decode(options["$skipToken"]))["offset"]
        page = rows[offset : offset + top]
        response: dict[str, Any] = {
            "totalRecords": len(rows),
            "count": len(page),
            "resultTruncated": "false",
            "data": page,
            "facets": [],
        }
        if offset + top < len(rows):
            token = json.dumps({"offset": offset + top}).encode()
            response["$skipToken"] = base64.b64encode(token).decode()
        return 200, {}, response

    def _metrics(
        self, path: str, query: dict[str, str], payload: dict[str, Any]
    ) -> tuple[int, dict[str, str], Any]:
        subscription = path.split("/")[2].lower()
        ids = payload.get("resourceids") or []
        if len(ids) > MAX_RESOURCES_PER_BATCH:
            return 400, {}, _error("BadRequest", "at most 50 resource ids per batch")
        if subscription in self.forbidden:
            return 403, {}, _error("AuthorizationFailed", "no access to the subscription")
        start = _parse(query["starttime"])
        end = _parse(query["endtime"])
        hours = int((end - start) / timedelta(hours=1))
        names = [unquote(n) for n in query["metricnames"].split(",")]
        known = self.by_id()
        values = []
        for rid in ids:
            if not rid.lower().startswith(f"/subscriptions/{subscription}/"):
                return 400, {}, _error("BadRequest", "resource ids must be of the subscription")
            resource = known.get(rid.lower())
            if resource is None:
                continue
            metrics = []
            for name in names:
                points = hourly_metric(self.seed, resource, name, start, hours)
                data = [
                    {"timeStamp": _iso(t), "average": v, "total": v}
                    if name == "Percentage CPU"
                    else {"timeStamp": _iso(t), "total": v}
                    for t, v in points
                ]
                metrics.append(
                    {
                        "id": f"{rid}/providers/Microsoft.Insights/metrics/{name}",
                        "type": "Microsoft.Insights/metrics",
                        "name": {"value": name, "localizedValue": name},
                        "displayDescription": "",
                        "unit": METRIC_UNITS.get(name, "Count"),
                        "timeseries": [{"metadatavalues": [], "data": data}],
                        "errorCode": "Success",
                    }
                )
            values.append(
                {
                    "starttime": query["starttime"],
                    "endtime": query["endtime"],
                    "interval": query.get("interval", "PT1H"),
                    "namespace": query.get("metricnamespace"),
                    "resourceregion": resource.row["location"],
                    "resourceid": rid,
                    "value": metrics,
                }
            )
        return 200, {}, {"values": values}

    def _logs(self, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        workspace = path.rstrip("/").split("/")[-2].lower()
        if payload.get("query") != ACTIVITY_QUERY:
            return 400, {}, _error("BadArgumentError", "the fake only answers the scanner's query")
        start_text, end_text = str(payload.get("timespan", "")).split("/")
        start, end = _parse(start_text), _parse(end_text)
        rows = [
            [r.resource_id.lower(), _iso(r.stopped_at)]
            for r in self.live()
            if r.stopped_by(end)
            and (r.subscription.workspace_id or "").lower() == workspace
            and start <= r.stopped_at <= end
        ]
        table = {
            "name": "PrimaryResult",
            "columns": [
                {"name": "resource_id", "type": "string"},
                {"name": "stopped_at", "type": "datetime"},
            ],
            "rows": rows,
        }
        return 200, {}, {"tables": [table]}

    def _instance_view(self, path: str) -> tuple[int, dict[str, str], Any]:
        vm_id = path[: -len("/instanceView")].lower()
        if vm_id.split("/")[2] in self.forbidden:
            return 403, {}, _error("AuthorizationFailed", "no access to the subscription")
        resource = self.by_id().get(vm_id)
        if resource is None:
            return 404, {}, _error("ResourceNotFound", "no such virtual machine")
        power = resource.row_at(self.now)["properties"]["extended"]["instanceView"]
        last_operation = resource.stopped_at if resource.stopped_by(self.now) else None
        statuses = [
            {
                "code": "ProvisioningState/succeeded",
                "level": "Info",
                "time": _iso(last_operation or resource.appears_at or self.now),
            },
            {"code": power["powerState"]["code"], "level": "Info"},
        ]
        return 200, {}, {"statuses": statuses}


def _route(method: str, path: str) -> str:
    lowered = path.lower()
    if lowered == TOKEN_PATH:
        return "token"
    if method == "POST" and lowered.endswith("/providers/microsoft.resourcegraph/resources"):
        return "resourcegraph"
    if method == "POST" and lowered.endswith("/metrics:getbatch"):
        return "metrics"
    if method == "POST" and "/workspaces/" in lowered and lowered.endswith("/query"):
        return "logs"
    if method == "GET" and lowered.endswith("/instanceview"):
        return "instance_view"
    return "other"


def _handler(fake: FakeAzure) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                status, headers, payload = fake.handle(
                    self.command, unquote(parts.path), query, self.headers, body
                )
            except Exception as exc:  # a fake's bug must show up as a 500, not a hang
                log.exception("fake azure failed")
                status, headers, payload = 500, {}, _error("InternalError", repr(exc))
            data = orjson.dumps(payload)
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_CERT: tuple[Path, Path] | None = None
_CERT_LOCK = threading.Lock()


def _certificate() -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made once per process."""
    global _CERT
    with _CERT_LOCK:
        if _CERT is None:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.x509.oid import NameOID

            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudwaste-fake-azure")])
            now = datetime.now(UTC)
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=30))
                .add_extension(
                    x509.SubjectAlternativeName(
                        [
                            x509.DNSName("localhost"),
                            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        ]
                    ),
                    critical=False,
                )
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256())
            )
            folder = Path(tempfile.mkdtemp(prefix="cloudwaste-fake-azure-"))
            cert_file, key_file = folder / "cert.pem", folder / "key.pem"
            cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            key_file.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            _CERT = (cert_file, key_file)
        return _CERT
