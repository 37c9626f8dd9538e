#!/bin/sh
# Refuse to start with a placeholder secret, then run the given command.
set -eu
for name in MLFLOW_BACKEND_STORE_URI PGPASSWORD AWS_SECRET_ACCESS_KEY; do
    eval "value=\${$name:-}"
    case "$value" in
        *__generate__*)
            echo "mlflow-server: $name holds a placeholder secret: run \`make up\` (or \`mlstack init\`) to generate .env" >&2
            exit 64 ;;
    esac
done
exec "$@"
