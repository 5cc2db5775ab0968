"""Config models of the HTTP and FHIR sources: defaults, auth schemes, sync rules, paths."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.connectors.web import FHIR_SOURCE, HTTP_SOURCE, FhirSourceConfig, HttpSourceConfig
from engine.connectors.web.config import HTTP_CONTENT_TYPES, HttpAuthConfig, split_listen
from engine.core.errors import ConfigError
from engine.core.loader import load_channel


def http(**values: object) -> HttpSourceConfig:
    return HttpSourceConfig.model_validate({"type": "http", **values})


def test_http_defaults_are_safe_and_asynchronous() -> None:
    config = http()
    assert config.listen == "127.0.0.1:8781"
    assert config.path is None and config.auth is None and config.tls is None
    assert config.methods == ["POST"]
    assert config.response == "async" and config.ack_mode == "on_receipt"
    assert config.max_body_bytes == 10 * 1024 * 1024
    assert tuple(config.content_types) == HTTP_CONTENT_TYPES


@pytest.mark.parametrize(
    ("auth", "scheme"),
    [
        ({"bearer_env": "TOKEN"}, "bearer"),
        ({"api_key_env": "KEY", "api_key_header": "X-Partner-Key"}, "api_key"),
        ({"basic_user_env": "U", "basic_password_env": "P"}, "basic"),
    ],
)
def test_each_auth_scheme_alone_is_accepted(auth: dict[str, str], scheme: str) -> None:
    assert http(auth=auth).auth.scheme == scheme  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({}, "exactly one of"),
        ({"bearer_env": "T", "api_key_env": "K"}, "exactly one of"),
        ({"basic_user_env": "U"}, "needs both"),
        ({"bearer_env": "s3cr3t token!"}, "name of an environment variable"),
        ({"api_key_env": "K", "api_key_header": "Authorization"}, "use bearer_env"),
        ({"api_key_env": "K", "api_key_header": "X Key"}, "header name"),
        ({"bearer_env": "T", "token": "inline"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_auth_is_refused_with_a_clear_message(auth: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HttpAuthConfig.model_validate(auth)


def test_sync_response_needs_after_processing_and_respond_from_needs_sync() -> None:
    with pytest.raises(ValidationError, match="response: sync needs ack_mode: after_processing"):
        http(response="sync")
    with pytest.raises(ValidationError, match="respond_from needs response: sync"):
        http(respond_from="erp", ack_mode="after_processing")
    config = http(response="sync", ack_mode="after_processing", respond_from="erp", sync_timeout_secs=5)
    assert (config.respond_from, config.sync_timeout_secs) == ("erp", 5)


@pytest.mark.parametrize("path", ["channels/x", "/x/", "/x y", "/", "/a//b", "/a?b"])
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(ValidationError, match="path must start with '/'"):
        http(path=path)


@pytest.mark.parametrize("listen", ["8781", "host:", "host:99999", ":80"])
def test_bad_listen_addresses_are_refused(listen: str) -> None:
    with pytest.raises(ValidationError, match=r"host:port|port must be"):
        http(listen=listen)


def test_listen_splits_ipv6_and_port_zero() -> None:
    assert split_listen(" [::1]:0 ") == ("::1", 0)


def test_content_types_are_lowercased_and_checked() -> None:
    assert http(content_types=["Application/JSON"]).content_types == ["application/json"]
    with pytest.raises(ValidationError, match="is not a media type"):
        http(content_types=["json"])
    with pytest.raises(ValidationError):
        http(methods=["GET"])


def test_fhir_resource_types_are_checked() -> None:
    config = FhirSourceConfig.model_validate({"type": "fhir", "resource_types": ["SupplyDelivery", "ChargeItem"]})
    assert config.resource_types == ["SupplyDelivery", "ChargeItem"]
    for bad, message in (
        (["supplyDelivery"], "not a FHIR resource type name"),
        (["Bundle"], "batch and transaction"),
        (["Device", "Device"], "listed twice"),
    ):
        with pytest.raises(ValidationError, match=message):
            FhirSourceConfig.model_validate({"type": "fhir", "resource_types": bad})
    with pytest.raises(ValidationError):
        FhirSourceConfig.model_validate({"type": "fhir", "response": "sync"})  # http-only key


def test_specs_point_at_the_configs() -> None:
    assert HTTP_SOURCE.config is HttpSourceConfig and FHIR_SOURCE.config is FhirSourceConfig
    assert HTTP_SOURCE.factory == "engine.connectors.web.source:HttpSource"
    assert FHIR_SOURCE.factory == "engine.connectors.web.fhir:FhirSource"


def test_a_channel_file_with_an_http_source_loads_and_reports_errors_by_line(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        name: price-check
        source:
          type: http
          response: sync
          ack_mode: after_processing
          respond_from: erp
          auth:
            api_key_env: PRICE_KEY
        pipeline:
          datatype: {type: json}
        destinations:
          - {type: http, name: erp, url: "http://127.0.0.1:9/prices", send_first: true}
        """
    )
    channel = load_channel(tmp_path / "price-check.yaml", env={}, text=text)
    assert isinstance(channel.source, HttpSourceConfig)
    assert channel.source.respond_from == "erp"
    broken = text.replace("  ack_mode: after_processing\n", "")
    with pytest.raises(ConfigError, match="after_processing"):
        load_channel(tmp_path / "price-check.yaml", env={}, text=broken)
