# The CloudWaste image: one image for every Dagster process of a deployment.
#   - docker-compose.yml runs it three times: the user-code gRPC server (the default command below,
#     where runs, sensors and schedules execute), dagster-webserver and dagster-daemon;
#   - the Helm chart (deploy/helm/values.yaml) runs it as the code server and as every run pod.
# See docs/deployment.md. Build: docker compose build (or docker build -t <image> .).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    CLOUDWASTE_HOME=/opt/dagster/cloudwaste_home

WORKDIR /opt/dagster/app
COPY . .

# The k8s extra (dagster-k8s) is what lets the same image serve the Helm chart, whose run pods
# load the K8sRunLauncher from the instance config; docker-compose never imports it.
RUN pip install ".[k8s]" \
    && rm -rf build ./*.egg-info

# A fixed, unprivileged uid, so volumes (named volumes here, a PVC in Kubernetes) can be owned by
# it. dagster.yaml stays root-owned: the processes read it and cannot change it.
RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster --no-create-home dagster \
    && mkdir -p "$DAGSTER_HOME/storage" "$CLOUDWASTE_HOME" \
    && cp dagster.yaml "$DAGSTER_HOME/dagster.yaml" \
    && chown dagster:dagster "$DAGSTER_HOME" "$DAGSTER_HOME/storage" "$CLOUDWASTE_HOME"

USER dagster
EXPOSE 4000 3000

CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", "-m", "cloudwaste_pipeline.definitions"]
