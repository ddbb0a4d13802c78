from pathlib import Path

import pytest

from app.errors import ConfigError
from app.settings import Settings, load_settings

NONE = dict.fromkeys(["host", "port", "secret_dir", "config", "proxy", "log_level", "watch_secret"])


def test_defaults():
    assert load_settings(NONE, {}) == Settings()


def test_flags_win_over_environment(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("routes: {a: {}}")
    env = {
        "AUTHGATE_PORT": "9000",
        "AUTHGATE_PROXY": "traefik",
        "AUTHGATE_CONFIG": str(policy),
        "AUTHGATE_WATCH_SECRET": "ns/name",
        "AUTHGATE_LOG_LEVEL": "DEBUG",
    }
    settings = load_settings({**NONE, "port": "9001"}, env)
    assert settings.port == 9001 and settings.proxy == ("traefik",) and settings.config == policy
    assert settings.watch_secret == ("ns", "name") and settings.log_level == "debug"
    assert load_settings({**NONE, "secret_dir": "/x"}, {}).secret_dir == Path("/x")


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"port": "0"}, {}, "--port: must be an integer from 1 to 65535, got '0'"),
        ({}, {"AUTHGATE_PORT": "80a"}, "AUTHGATE_PORT: must be an integer"),
        (
            {"proxy": "haproxy"},
            {},
            "--proxy: 'haproxy' is not a front door (known: ingress-nginx, traefik, path-prefix, nginx-gateway-fabric",
        ),
        ({"proxy": "traefik,traefik"}, {}, "--proxy: names a front door twice"),
        ({"proxy": "envoy,path-prefix"}, {}, "--proxy: names a front door twice"),
        ({"log_level": "loud"}, {}, "--log-level: must be one of"),
        ({"config": "/no/such/file"}, {}, "--config: no such file"),
        ({"watch_secret": "justname"}, {}, "--watch-secret: must be NAMESPACE/NAME"),
        ({"watch_secret": "a/b/c"}, {}, "--watch-secret: must be NAMESPACE/NAME"),
        ({"host": " "}, {}, "--host: must not be empty"),
        ({"grpc_port": "0"}, {}, "--grpc-port: must be an integer from 1 to 65535, got '0'"),
        ({}, {"AUTHGATE_GRPC_PORT": "9x"}, "AUTHGATE_GRPC_PORT: must be an integer"),
        ({"grpc_port": "8080"}, {}, "--grpc-port: must differ from the HTTP port, got 8080"),
        ({"grpc_port": "9000"}, {"AUTHGATE_PORT": "9000"}, "--grpc-port: must differ from the HTTP port"),
        ({"grpc_default_route": "api"}, {}, "--grpc-default-route: has no effect without --grpc-port"),
        ({"grpc_port": "9001", "grpc_default_route": " api"}, {}, "--grpc-default-route: must be a route name"),
        ({"health_port": "65536"}, {}, "--health-port: must be an integer from 1 to 65535, got '65536'"),
        ({}, {"AUTHGATE_HEALTH_PORT": "on"}, "AUTHGATE_HEALTH_PORT: must be an integer"),
        ({"health_port": "8080"}, {}, "--health-port: must differ from the HTTP port, got 8080"),
        ({"health_port": "9000"}, {"AUTHGATE_PORT": "9000"}, "--health-port: must differ from the HTTP port"),
        ({"grpc_port": "9001", "health_port": "9001"}, {}, "--health-port: must differ from the gRPC port, got 9001"),
        ({"server": "gunicorn"}, {}, "--server: must be one of granian, uvicorn, got 'gunicorn'"),
        ({}, {"AUTHGATE_SERVER": "hypercorn"}, "AUTHGATE_SERVER: must be one of"),
        ({"max_headers": "101"}, {}, "--max-headers: above 100 needs --server uvicorn"),
        ({}, {"AUTHGATE_MAX_HEADERS": "500", "AUTHGATE_SERVER": "granian"}, "AUTHGATE_MAX_HEADERS: above 100"),
    ],
)
def test_bad_values_name_themselves(flags, env, message):
    with pytest.raises(ConfigError) as err:
        load_settings({**NONE, **flags}, env)
    assert message in str(err.value)


def test_proxy_defaults_to_both_ingress_doors_and_takes_a_list():
    assert Settings().proxy == ("ingress-nginx", "traefik")
    assert load_settings({**NONE, "proxy": "traefik, ingress-nginx"}, {}).proxy == ("traefik", "ingress-nginx")
    assert load_settings({**NONE, "proxy": "envoy"}, {}).proxy == ("path-prefix",)  # its earlier name
    assert load_settings({**NONE, "proxy": "path-prefix,nginx-gateway-fabric"}, {}).proxy == (
        "path-prefix",
        "nginx-gateway-fabric",
    )


def test_grpc_is_off_by_default_and_read_from_flags_or_environment():
    assert Settings().grpc_port is None and Settings().grpc_default_route is None
    env = {"AUTHGATE_GRPC_PORT": "9001", "AUTHGATE_GRPC_DEFAULT_ROUTE": "api"}
    settings = load_settings(NONE, env)
    assert (settings.grpc_port, settings.grpc_default_route) == (9001, "api")
    assert load_settings({**NONE, "grpc_port": "9002"}, env).grpc_port == 9002


def test_the_health_port_is_off_by_default_and_read_from_flags_or_environment():
    assert Settings().health_port is None and load_settings(NONE, {}).health_port is None
    assert load_settings(NONE, {"AUTHGATE_HEALTH_PORT": "8081"}).health_port == 8081
    assert load_settings({**NONE, "health_port": "9100"}, {"AUTHGATE_HEALTH_PORT": "8081"}).health_port == 9100


def test_server_defaults_to_granian_and_is_chosen_by_flag_or_environment():
    assert Settings().server == "granian"
    assert load_settings({**NONE, "server": "uvicorn"}, {}).server == "uvicorn"
    assert load_settings(NONE, {"AUTHGATE_SERVER": "Uvicorn"}).server == "uvicorn"
    assert load_settings({**NONE, "server": "granian"}, {"AUTHGATE_SERVER": "uvicorn"}).server == "granian"
    # uvicorn's own parser takes any number of header lines: the limit is authgate's alone there
    assert load_settings({**NONE, "server": "uvicorn", "max_headers": "500"}, {}).limits.max_headers == 500
