from __future__ import annotations

import pytest

from openeas.spec import SpecError, parse_gateway_spec, shared_gateway_spec


def _fields(exc: SpecError) -> list[str]:
    return [p.field for p in exc.problems]


def test_dedicated_defaults_follow_eas() -> None:
    gw = parse_gateway_spec({"name": "gw-prod", "listen": {"intranet": "127.0.0.1:9100"}})
    assert gw.enable_internet is False and gw.enable_intranet is True
    assert [a.entry for a in gw.internet_acl] == ["0.0.0.0/0"]
    assert gw.rate_limit == 0 and gw.max_body_bytes == 1024 * 1024


def test_shared_gateway_limits() -> None:
    gw = shared_gateway_spec("127.0.0.1:1", "127.0.0.1:2", "http://a:1", "http://b:2")
    assert (gw.rate_limit, gw.group_rate_limit, gw.max_body_bytes) == (1000, 10000, 1024 * 1024)
    assert gw.enable_internet and gw.enable_intranet


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (
            {"name": "gw", "listen": {"intranet": "127.0.0.1:1"}, "intranet_acl": [{"entry": "10.0.0/33"}]},
            "intranet_acl[0].entry",
        ),
        ({"name": "gw", "listen": {"intranet": "nope"}}, "listen.intranet"),
        ({"name": "GW", "listen": {"intranet": "127.0.0.1:1"}}, "name"),
        ({"name": "gw", "listen": {"intranet": "127.0.0.1:1"}, "colour": "red"}, "colour"),
    ],
)
def test_bad_fields_are_named(data: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_gateway_spec(data)
    assert field in _fields(err.value), err.value


def test_inconsistent_access_settings() -> None:
    with pytest.raises(SpecError, match=r"enable_internet needs listen\.internet"):
        parse_gateway_spec({"name": "gw", "enable_internet": True, "listen": {"intranet": "127.0.0.1:1"}})
    with pytest.raises(SpecError, match="serves nobody"):
        parse_gateway_spec({"name": "gw", "enable_intranet": False})
    with pytest.raises(SpecError, match="ssl_redirect needs"):
        parse_gateway_spec({"name": "gw", "listen": {"intranet": "127.0.0.1:1"}, "ssl_redirect": True})


def test_cidrs_are_normalised() -> None:
    gw = parse_gateway_spec(
        {"name": "gw", "listen": {"intranet": "127.0.0.1:1"}, "intranet_acl": [{"entry": "10.1.2.3/8"}]}
    )
    assert gw.intranet_acl[0].entry == "10.0.0.0/8"
