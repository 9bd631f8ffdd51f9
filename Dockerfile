FROM python:3.11-slim
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir . && AC_DATA_DIR=/tmp/build python manage.py collectstatic --noinput
ENV PYTHONUNBUFFERED=1
# The web process (the compose file's worker and beat services run celery instead).
ENV GUNICORN_BIND=0.0.0.0:8000
CMD ["gunicorn", "--config", "gunicorn.conf.py"]
