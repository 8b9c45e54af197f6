"""Schemathesis hooks for infra/scripts/api-fuzz.sh: every route gets the credentials it
checks, so generated requests reach past authentication into the parsers.

- App routes: `Authorization: Bearer <API key>`.
- `POST /webhooks/pipedrive`: the HTTP Basic login the runner was started with.
- `POST /webhooks/app` and `POST /webhooks/hubspot`: a signature over the exact bytes sent.
  The auth providers put a marker in the signature header; `before_call` serialises the body
  itself, signs those bytes and sends them. Only a request carrying the marker is signed: when
  schemathesis removes the credentials, or sets wrong ones (its `ignored_auth` check), the
  request goes out as it made it and must be refused.

For HubSpot, the batch's `portalId`s name the tenant, so a generated batch whose ids are valid
integers is sent with the runner's portal id in their place (the same validity, a known
tenant); any other body is sent as generated.
"""

import base64
import hashlib
import hmac
import json
import os
import time

import schemathesis

MARK = "signed-by-the-fuzz-hooks"
API_KEY = os.environ.get("API_FUZZ_API_KEY", "local-dev-key")
TENANT = os.environ.get("API_FUZZ_TENANT", "default")
BASE_URL = os.environ["API_FUZZ_BASE_URL"]
APP_SECRET = os.environ["API_FUZZ_APP_SECRET"]
HUBSPOT_SECRET = os.environ["API_FUZZ_HUBSPOT_SECRET"]
PORTAL = int(os.environ["API_FUZZ_PORTAL"])
COMPANY = int(os.environ["API_FUZZ_COMPANY"])
PIPEDRIVE_LOGIN = base64.b64encode(
    f"{os.environ['API_FUZZ_PIPEDRIVE_USER']}:{os.environ['API_FUZZ_PIPEDRIVE_PASSWORD']}".encode()
).decode()
MAX_SAFE = 2**53 - 1


def _headers(case):
    if case.headers is None:
        case.headers = {}
    return case.headers


@schemathesis.auth().skip_for(path_regex="^/webhooks/")
class ApiKey:
    def get(self, case, ctx):
        return API_KEY

    def set(self, case, data, ctx):
        _headers(case)["Authorization"] = f"Bearer {data}"


@schemathesis.auth().apply_to(path="/webhooks/pipedrive")
class PipedriveLogin:
    def get(self, case, ctx):
        return PIPEDRIVE_LOGIN

    def set(self, case, data, ctx):
        _headers(case)["Authorization"] = f"Basic {data}"


@schemathesis.auth().apply_to(path="/webhooks/app")
class AppSignature:
    def get(self, case, ctx):
        return MARK

    def set(self, case, data, ctx):
        _headers(case)["X-Webhook-Signature"] = data


@schemathesis.auth().apply_to(path="/webhooks/hubspot")
class HubSpotSignature:
    def get(self, case, ctx):
        return MARK

    def set(self, case, data, ctx):
        _headers(case)["X-HubSpot-Signature-v3"] = data


def _has_body(case):
    return case.body is not None and type(case.body).__name__ != "NotSet"


def _body_bytes(case, transform=lambda body: body):
    """The bytes to send: JSON bodies serialised here (after `transform`), so the signature
    covers exactly what goes out; bytes and text (other media types) as they are."""
    if not _has_body(case):
        return b""
    body = case.body
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str) and "json" not in (case.media_type or ""):
        return body.encode()
    return json.dumps(transform(body)).encode()


def _with_our_portal(body):
    if not isinstance(body, list):
        return body
    out = []
    for event in body:
        if isinstance(event, dict):
            portal = event.get("portalId")
            if _is_id(portal) and not isinstance(portal, str):
                event = dict(event, portalId=PORTAL)
        out.append(event)
    return out


def _is_id(v):
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return 0 <= v <= MAX_SAFE
    if isinstance(v, float):
        return v.is_integer() and 0 <= v <= MAX_SAFE
    return isinstance(v, str) and 1 <= len(v) <= 15 and v.isascii() and v.isdigit()


def _with_our_company(body):
    if isinstance(body, dict) and isinstance(body.get("meta"), dict):
        company = body["meta"].get("company_id")
        if _is_id(company):
            ours = str(COMPANY) if isinstance(company, str) else COMPANY
            body = dict(body, meta=dict(body["meta"], company_id=ours))
    return body


def _hmac(secret, message):
    return hmac.new(secret.encode(), message, hashlib.sha256)


@schemathesis.hook
def before_call(ctx, case, kwargs):
    headers = case.headers or {}
    path = case.operation.path
    if path == "/webhooks/app" and headers.get("X-Webhook-Signature") == MARK:
        raw = _body_bytes(case)
        headers["X-Webhook-Signature"] = _hmac(APP_SECRET, raw).hexdigest()
        # The tenant header is generated like any other; a present one names our tenant.
        if "X-Contact-Sync-Tenant" in headers:
            headers["X-Contact-Sync-Tenant"] = TENANT
        kwargs["data"] = raw
    elif path == "/webhooks/hubspot" and headers.get("X-HubSpot-Signature-v3") == MARK:
        raw = _body_bytes(case, _with_our_portal)
        timestamp = str(int(time.time() * 1000))
        message = b"POST" + f"{BASE_URL}{path}".encode() + raw + timestamp.encode()
        headers["X-HubSpot-Request-Timestamp"] = timestamp
        headers["X-HubSpot-Signature-v3"] = base64.b64encode(_hmac(HUBSPOT_SECRET, message).digest()).decode()
        kwargs["data"] = raw
    elif path == "/webhooks/pipedrive" and _has_body(case):
        kwargs["data"] = _body_bytes(case, _with_our_company)
