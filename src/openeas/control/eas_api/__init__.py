"""EAS's management API (API version 2021-07-01), so the official `alibabacloud-eas20210701`
SDK manages openeas services unmodified (docs/management-api.md).

    signing.py     the SDK's request signatures, verified as the SDK makes them
    models.py      EAS's request / response shapes (pydantic)
    operations.py  the operations: path, method, models, and the translation onto openeas's API
    views.py       openeas's views -> EAS's response models
    native.py      the in-process client of openeas's own API that operations call
    errors.py      EAS's error body {Code, Message, RequestId}
    openapi.py     the OpenAPI document, generated from the above
    app.py         the ASGI wrapper: auth, dispatch, AccessKey management, /api/v2/openapi.json

`mount_eas_api` wraps the control API's app; `openeas server` calls it once at startup.
"""

from __future__ import annotations

from sqlalchemy import Engine
from starlette.types import ASGIApp

from openeas.config import ServerConfig
from openeas.control.eas_api.app import EasApi
from openeas.control.eas_api.operations import GatewayHosts
from openeas.store.access_keys import AccessKeyStore, ensure_encryption_key


def mount_eas_api(app: ASGIApp, config: ServerConfig, engine: Engine, admin_token: str) -> EasApi:
    """The control API app wrapped with the EAS management API (AccessKey tables created).

    `engine` is the registry's (the AccessKey tables live in the same database)."""
    keys = AccessKeyStore(engine, ensure_encryption_key(config.data_dir))
    keys.create_schema()
    return EasApi(
        app,
        keys=keys,
        admin_token=admin_token,
        region=config.region,
        hosts=GatewayHosts(internet=config.internet_bind, intranet=config.vpc_bind),
    )


__all__ = ["EasApi", "mount_eas_api"]
