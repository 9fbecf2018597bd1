"""Key and account management over HTTP: ``management_app``, ``management_app_from_config``."""

from ._app import AdminTokenVerifier, SessionVerifier, management_app, management_app_from_config
from ._openapi import openapi_schema

__all__ = ["AdminTokenVerifier", "SessionVerifier", "management_app", "management_app_from_config", "openapi_schema"]
