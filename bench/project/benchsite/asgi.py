"""The ASGI application uvicorn serves in workloads 11 and 12."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

application = get_asgi_application()
