"""The Celery app: prewarm jobs, the scheduled refresh and re-verification (mirror/tasks.py).

Settings are the CELERY_* names in config/settings.py; schedules are rows of
django-celery-beat, editable in the admin (defaults: mirror/schedules.py).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("entrepot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
