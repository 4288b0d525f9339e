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

from typing import TYPE_CHECKING

from starlette.types import ASGIApp

from openeas.control.eas_api.app import EasApi
from openeas.control.eas_api.operations import GatewayHosts
from openeas.store.access_keys import AccessKeyStore, ensure_encryption_key

if TYPE_CHECKING:
    from openeas.control.context import ControlContext


def mount_eas_api(app: ASGIApp, ctx: ControlContext) -> EasApi:
    """The control API app wrapped with the EAS management API (AccessKey tables created)."""
    config = ctx.config
    keys = AccessKeyStore(ctx.registry.engine, ensure_encryption_key(config.data_dir))
    keys.create_schema()
    return EasApi(
        app,
        keys=keys,
        admin_token=ctx.admin_token,
        region=config.region,
        hosts=GatewayHosts(internet=config.internet_bind, intranet=config.vpc_bind),
    )


__all__ = ["EasApi", "mount_eas_api"]
