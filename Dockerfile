FROM python:3.11-slim
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir . && AC_DATA_DIR=/tmp/build python manage.py collectstatic --noinput
ENV PYTHONUNBUFFERED=1
