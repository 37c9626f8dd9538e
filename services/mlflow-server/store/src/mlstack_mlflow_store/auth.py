"""The login check of MLflow's basic-auth app (its `authorization_function`), the same in every
worker at every moment.

MLflow's own check caches a verified login per worker for `auth_cache_ttl_seconds`: after a password
change or a removal, the workers that did not serve it kept accepting the old login (and a removed
person got 404 instead of 401), and a request straddling the cache's expiry could fail half-way
(500). Here every request reads the person's row (one indexed query) and the cache only spares the
password hash's cost: its key holds the stored hash, so a changed password, a removed person or a
changed admin flag counts from the next request in every worker. The answer is kept for the rest of
the request, so the auth app's later checks of the same request see the same login.

A person the user database does not know gets 401; a user database that does not answer (PostgreSQL
restarting, a failover) gets 503, which clients retry, instead of a 401 telling them their login is
wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sys
import threading

from cachetools import TTLCache
from flask import Response, g, has_request_context, request
from mlflow.exceptions import MlflowException
from werkzeug.security import check_password_hash

_VERIFIED: TTLCache | None = None
_LOCK = threading.Lock()
_KEY = secrets.token_bytes(32)


def auth_on() -> bool:
    """Whether the server runs MLflow's basic-auth app."""
    return "mlflow.server.auth" in sys.modules


def authenticate_request_basic_auth():
    """The request's `Authorization` when its basic-auth login is valid now, else a 401 answer."""
    if "mlstack_login" not in g:
        g.mlstack_login = _check()
    return g.mlstack_login


def _check():
    from mlflow.server import auth

    from mlstack_mlflow_store import compat

    authorization = request.authorization
    if authorization is None or not authorization.username or authorization.password is None:
        return auth.make_basic_auth_response()
    username, password = authorization.username, authorization.password
    try:
        user = auth.store.get_user(username)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return auth.make_basic_auth_response()
        return _user_database_unavailable(error)
    _remember_for_this_request(auth.store, user)
    key = (username, hmac.new(_KEY, password.encode(), hashlib.sha256).digest(), user.password_hash)
    cache = _cache(auth.auth_config.auth_cache_ttl_seconds)
    with _LOCK:
        known = cache is not None and key in cache
    if not known:
        if not check_password_hash(user.password_hash, password):
            return auth.make_basic_auth_response()
        if compat.legacy_admin_login(username, password, user):
            return auth.make_basic_auth_response()
        if cache is not None:
            with _LOCK:
                cache[key] = True
    return authorization


def _user_database_unavailable(error: MlflowException) -> Response:
    message = f"the user database did not answer ({error.error_code}); try again"
    body = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": message})
    # no Retry-After: clients then back off exponentially (a failover takes seconds; urllib3 would
    # otherwise spend MLflow's retries a second apart)
    return Response(body, status=503, mimetype="application/json")


def _remember_for_this_request(store, user) -> None:
    """The auth app looks the person up again later in the request (is this an admin?): it gets the
    row this check read, so a removal racing the request cannot turn it into a 404 half-way."""
    g.mlstack_users = {user.username: user}
    if getattr(store.get_user, "mlstack_per_request", False):
        return
    read = store.get_user

    def get_user(username: str):
        remembered = g.get("mlstack_users", {}) if has_request_context() else {}
        return remembered[username] if username in remembered else read(username)

    get_user.mlstack_per_request = True
    store.get_user = get_user


def _cache(ttl: int) -> TTLCache | None:
    global _VERIFIED
    if _VERIFIED is None and ttl > 0:
        _VERIFIED = TTLCache(maxsize=4096, ttl=ttl)
    return _VERIFIED
