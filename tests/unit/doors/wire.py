"""What each real front door sends to authgate for one client request, and a reader for the tests."""

from __future__ import annotations

from app.doors import front_doors

PEER = {"client": ("10.9.9.9", 5555), "method": "GET"}

# What each real door sends for a client's `POST /api/flows/filter` from 198.51.100.7.
NGINX = {
    b"x-original-url": b"https://prefect.example.com/api/flows/filter?limit=1",
    b"x-original-method": b"POST",
    b"x-real-ip": b"198.51.100.7",
    b"x-forwarded-for": b"198.51.100.7",
    b"x-sent-from": b"nginx-ingress-controller",
}
TRAEFIK = {
    b"x-forwarded-method": b"POST",
    b"x-forwarded-uri": b"/api/flows/filter?limit=1",
    b"x-forwarded-host": b"prefect.example.com",
    b"x-forwarded-proto": b"https",
    b"x-forwarded-for": b"203.0.113.1, 198.51.100.7",
}
# A client's forgery claiming to be `GET /api/health`, in each door's headers.
FORGED_NGINX = {b"x-original-url": b"https://prefect.example.com/api/health", b"x-original-method": b"GET"}
FORGED_TRAEFIK = {b"x-forwarded-uri": b"/api/health", b"x-forwarded-method": b"GET"}


def read(proxy: tuple[str, ...], headers: dict[bytes, bytes], rest: bytes | None = None, method: str = "GET"):
    return front_doors(proxy).read(headers, rest, {**PEER, "method": method})


# What NGINX Gateway Fabric sends for the same request (fixed auth path; X-Forwarded-For only if the
# operator listed it in allowedHeaders, and then it is the client's own claim).
NGF = {b"path": b"/api/flows/filter?limit=1", b"method": b"POST", b"x-forwarded-for": b"192.0.2.99"}
