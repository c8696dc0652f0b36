FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DJANGO_SETTINGS_MODULE=exchange.settings.production
WORKDIR /app
COPY pyproject.toml README.md ./
COPY exchange exchange
COPY orders orders
COPY matching matching
COPY risk risk
COPY wallet wallet
COPY templates templates
COPY manage.py ./
RUN pip install . && useradd --system --home /app exchange \
    && SECRET_KEY=build-only-collectstatic-key-not-used-at-runtime-0123456789abcdef \
       API_KEY_ENCRYPTION_KEY=YnVpbGQtb25seS1wbGFjZWhvbGRlci1ub3QtdXNlZCE= \
       DATABASE_URL=postgresql://unused@localhost/unused REDIS_URL=redis://localhost:6379/0 \
       ALLOWED_HOSTS=localhost python manage.py collectstatic --noinput \
    && chown -R exchange /app
USER exchange
EXPOSE 8000
# One uvicorn worker per core on SO_REUSEPORT sockets (exchange/server.py); the client
# address counts X-Forwarded-For only through NUM_PROXIES (set it behind a proxy).
CMD ["python", "-m", "exchange.server", "--host", "0.0.0.0", "--port", "8000"]
