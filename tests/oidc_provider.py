"""A local OpenID Connect provider for sign-in tests: discovery, an authorisation endpoint that
signs one configured person in at once, a token endpoint that checks the client and the code and
returns an RS256 ID token, and the key set. Enough for Authlib (what ``st.login`` runs on) to do
the whole authorisation-code flow against it, over real HTTP, as it would against Google or Okta."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(number: int) -> str:
    return _b64url(number.to_bytes((number.bit_length() + 7) // 8, "big"))


@dataclass
class Provider:
    """What a test reads and sets: where the provider is, the client it knows, who signs in next."""

    issuer: str
    client_id: str = "workbench"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    email: str = "ada@example.org"
    tokens_issued: int = 0

    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"


@contextmanager
def oidc_provider() -> Iterator[Provider]:
    """A provider on a free loopback port for the duration of the block."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "test-key",
                      "n": _uint(numbers.n), "e": _uint(numbers.e)}]}
    codes: dict[str, dict] = {}  # code -> what the authorisation request said

    def id_token(claims: dict) -> str:
        header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "test-key"}).encode())
        body = _b64url(json.dumps(claims).encode())
        signature = key.sign(f"{header}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{body}.{_b64url(signature)}"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _json(self, payload: dict, status: int = 200) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urlsplit(self.path)
            if url.path == "/.well-known/openid-configuration":
                self._json({
                    "issuer": provider.issuer,
                    "authorization_endpoint": f"{provider.issuer}/authorize",
                    "token_endpoint": f"{provider.issuer}/token",
                    "jwks_uri": f"{provider.issuer}/jwks",
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "scopes_supported": ["openid", "email", "profile"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                })
            elif url.path == "/jwks":
                self._json(jwks)
            elif url.path == "/authorize":
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if query.get("client_id") != provider.client_id or "openid" not in query.get("scope", "").split():
                    self._json({"error": "invalid_request"}, 400)
                    return
                code = secrets.token_urlsafe(16)
                codes[code] = query
                self.send_response(302)
                self.send_header("Location", f"{query['redirect_uri']}?"
                                 + urlencode({"code": code, "state": query.get("state", "")}))
                self.end_headers()
            else:
                self._json({"error": "not_found"}, 404)

        def do_POST(self) -> None:  # noqa: N802
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()}
            client = (form.get("client_id"), form.get("client_secret"))
            if (basic := self.headers.get("Authorization", "")).startswith("Basic "):
                client = tuple(base64.b64decode(basic[6:]).decode().split(":", 1))
            asked = codes.pop(form.get("code", ""), None)
            if urlsplit(self.path).path != "/token" or client != (provider.client_id, provider.client_secret):
                self._json({"error": "invalid_client"}, 401)
            elif asked is None or form.get("redirect_uri") != asked["redirect_uri"]:
                self._json({"error": "invalid_grant"}, 400)
            else:
                now = int(time.time())
                claims = {"iss": provider.issuer, "sub": f"sub-{provider.email}", "aud": provider.client_id,
                          "iat": now, "exp": now + 600, "email": provider.email, "email_verified": True}
                if "nonce" in asked:
                    claims["nonce"] = asked["nonce"]
                provider.tokens_issued += 1
                self._json({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                            "expires_in": 600, "id_token": id_token(claims)})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    provider = Provider(issuer=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
