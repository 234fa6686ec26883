FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md schema.sql ./
COPY src ./src
COPY clients/python ./clients/python
RUN pip install --no-cache-dir ./clients/python . && useradd --system livecart
USER livecart
EXPOSE 8000
CMD ["livecart", "serve", "--host", "0.0.0.0", "--port", "8000"]
