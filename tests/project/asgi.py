"""ASGI entry point of the test project (the browser stream tests serve it with uvicorn)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")

application = get_asgi_application()
