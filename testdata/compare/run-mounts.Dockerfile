# RUN --mount: what a bind from a stage and from the context, a tmpfs, a
# cache and a secret show in the step, and that none of their targets
# reaches the image (missing ones made for the step and removed after).
# (What .dockerignore leaves out of a context bind: tests/run_mounts.rs;
# buildah 1.28 binds the raw folder.)
ARG BASE
FROM ${BASE} AS tools
RUN mkdir -p /opt/tools && echo from-stage > /opt/tools/hello
FROM ${BASE}
RUN --mount=type=bind,from=tools,source=/opt/tools,target=/mnt/tools cat /mnt/tools/hello > /from-stage
RUN --mount=type=bind,source=files,target=/src cat /src/one.txt /src/two.txt > /from-context
RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/f && ls /scratch > /tmpfs-listed
RUN --mount=type=cache,target=/var/cache/c echo c > /var/cache/c/x && cp /var/cache/c/x /from-cache
RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /secret-size
