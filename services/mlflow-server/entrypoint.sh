#!/bin/sh
# Refuse to start with a placeholder secret; for `mlflow server`: add MLFLOW_PUBLIC_HOSTS to the
# allowed hosts and, unless MLFLOW_AUTH=false, turn on the basic-auth app with its configuration
# (the same file the native runtime writes: mlstack.runtime.native.runtime.auth_config). Then run
# the given command.
set -eu
for name in MLFLOW_BACKEND_STORE_URI PGPASSWORD AWS_SECRET_ACCESS_KEY MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY; do
    eval "value=\${$name:-}"
    case "$value" in
        *__generate__*)
            echo "mlflow-server: $name holds a placeholder secret: run \`make up\` (or \`mlstack init\`) to generate .env" >&2
            exit 64 ;;
    esac
done

if [ "${1:-}" = "mlflow" ] && [ "${2:-}" = "server" ]; then
    for host in $(echo "${MLFLOW_PUBLIC_HOSTS:-}" | tr ',' ' '); do
        MLFLOW_SERVER_ALLOWED_HOSTS="${MLFLOW_SERVER_ALLOWED_HOSTS:-},$host,$host:*"
    done
    if [ -n "${MLFLOW_SERVER_ALLOWED_HOSTS:-}" ]; then export MLFLOW_SERVER_ALLOWED_HOSTS; fi
    if [ "${MLFLOW_AUTH:-true}" = "true" ]; then
        : "${MLFLOW_AUTH_DATABASE_URI:?MLFLOW_AUTH_DATABASE_URI is not set: where the auth app keeps users}"
        MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_PATH:-$HOME/basic_auth.ini}"
        umask 077
        printf '[mlflow]\ndefault_permission = %s\ndatabase_uri = %s\nauthorization_function = %s\nauth_cache_ttl_seconds = %s\n' \
            "${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}" "$MLFLOW_AUTH_DATABASE_URI" \
            "mlstack_mlflow_store.auth:authenticate_request_basic_auth" "${MLFLOW_AUTH_CACHE_SECONDS:-30}" \
            > "$MLFLOW_AUTH_CONFIG_PATH"
        export MLFLOW_AUTH_CONFIG_PATH
        set -- "$@" --app-name basic-auth
    fi
fi
exec "$@"
