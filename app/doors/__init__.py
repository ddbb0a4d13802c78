"""Front doors: the proxies that call authgate, each in one small module that turns its wire format into
a :class:`View` of the original request. The decision core never knows which door it is behind.

A door's *marks* are the headers it always writes, overwriting whatever a client sent under those names.
Only those can be believed, and only when that door is really the one in front: ingress-nginx copies a
client's own ``X-Forwarded-Uri`` to the auth service untouched, Traefik a client's own ``X-Original-URL``.
:class:`FrontDoors` therefore reads the doors the operator named (``--proxy``) *and* cross-checks every
other door's marks that a request carries (see :mod:`app.doors.reading`).
"""

from __future__ import annotations

from app.doors.base import Door, View
from app.doors.ingress_nginx import INGRESS_NGINX
from app.doors.nginx_gateway_fabric import NGINX_GATEWAY_FABRIC
from app.doors.path_prefix import PATH_PREFIX
from app.doors.reading import FrontDoors, Reading
from app.doors.traefik import TRAEFIK

# Every door authgate speaks, by its --proxy name (``envoy``: the earlier name of ``path-prefix``).
_ALL: tuple[Door, ...] = (INGRESS_NGINX, TRAEFIK, PATH_PREFIX, NGINX_GATEWAY_FABRIC)
DOORS: dict[str, Door] = {door.name: door for door in _ALL}
DOORS["envoy"] = PATH_PREFIX
# Doors whose marks are headers a client could also write through another door: cross-checked always.
HEADER_DOORS: tuple[Door, ...] = (INGRESS_NGINX, TRAEFIK, NGINX_GATEWAY_FABRIC)
# What --proxy defaults to: the chart's Ingresses are served unchanged by ingress-nginx and by Traefik's
# ingress-nginx provider (which turns auth-url into ForwardAuth), so both are believed, and cross-checked.
DEFAULT_DOORS: tuple[str, ...] = ("ingress-nginx", "traefik")


def front_doors(names: tuple[str, ...]) -> FrontDoors:
    """The reader for the doors named by ``--proxy``."""
    trusted = tuple(DOORS[name] for name in names)
    return FrontDoors(trusted, tuple(door for door in HEADER_DOORS if door not in trusted))


__all__ = ["DEFAULT_DOORS", "DOORS", "HEADER_DOORS", "Door", "FrontDoors", "Reading", "View", "front_doors"]
