# The image helm/entrepot deploys: gunicorn by default; the chart runs the Celery worker and
# beat and the migrations Job from the same image with other commands.
#
#   docker build -t entrepot:0.1.0 .
#   docker run -p 8000:8000 -v entrepot:/app/var entrepot:0.1.0      # embedded: SQLite, folder
#
# In production (the chart) the root filesystem is read-only: settings come from the
# environment (DATABASE_URL, REDIS_URL, AWS_STORAGE_BUCKET_NAME, SECRET_KEY...), and only /tmp,
# /app/var/spool (fills in progress) and the Prometheus folder are writable volumes.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings \
    MIRROR_DATA_DIR=/app/var

# A fixed numeric id: the chart's securityContext runs as 10001:10001 (runAsNonRoot).
RUN groupadd --system --gid 10001 entrepot \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin entrepot

WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY manage.py ./
COPY config ./config
COPY mirror ./mirror
COPY registries ./registries
COPY goproxy ./goproxy

# The admin's static files, served by whitenoise from STATIC_ROOT (MIRROR_DATA_DIR/static), are
# part of the image. The SECRET_KEY here only keeps settings from writing a key file into the
# image; collectstatic touches no database. MIRROR_DATA_DIR then belongs to the app user, so
# that the image also runs on its own with a volume there (SQLite, local storage).
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput --verbosity 0 \
 && python -m compileall -q config mirror registries goproxy \
 && mkdir -p var/spool \
 && chown -R 10001:10001 var

USER 10001:10001
EXPOSE 8000
CMD ["gunicorn", "--config", "config/gunicorn.py", "config.wsgi"]
