"""gunicorn settings for the image-policy webhook.

    gunicorn -c deploy/gunicorn.conf.py

serves `policy.web:create_app()` with the same settings `image-policy serve` uses (both come
from `policy.server.gunicorn_settings`): gthread workers, worker heartbeat in /dev/shm, graceful
shutdown, TLS re-read on certificate rotation. Configured by the environment:

    IMAGE_POLICY_RULES       rule files or directories, separated by ':'   (required)
    IMAGE_POLICY_CONFIG      settings file (registries, timeouts, excludeNamespaces, ...)
    IMAGE_POLICY_TLS_CERT    serving certificate (PEM); without it: plain HTTP on 127.0.0.1
    IMAGE_POLICY_TLS_KEY     its private key
    IMAGE_POLICY_CLIENT_CA   require client certificates signed by this CA (optional)
    IMAGE_POLICY_HOST, IMAGE_POLICY_PORT       default 0.0.0.0:8443 with TLS, 127.0.0.1:8080 without
    IMAGE_POLICY_WORKERS, IMAGE_POLICY_THREADS default 1 worker, 16 threads

Plain HTTP is served on loopback only, however the address was asked for: the settings below
include `on_starting`/`when_ready` hooks that check gunicorn's final configuration, so
`gunicorn -c deploy/gunicorn.conf.py --bind 0.0.0.0:8080` without a certificate exits 1 with
the reason before it listens. With IMAGE_POLICY_CLIENT_CA, every TLS client must present a
certificate signed by that CA (`ca_certs`, `cert_reqs = ssl.CERT_REQUIRED`): the API server
does, through its AdmissionConfiguration (docs/operations.md, "Only the API server").
"""

from policy import server

_options = server.options_from_env()
_options.check()

wsgi_app = "policy.web:create_app()"
globals().update(server.gunicorn_settings(_options))
