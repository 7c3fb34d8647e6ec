# USER and WORKDIR as RUN sees them, ENV and ARG visibility (an ARG is in
# the step's environment, never in the config), SHELL, the exec form.
ARG BASE
FROM ${BASE}
ARG BUILD_ONLY=argvalue
ENV FROM_ENV=envvalue
WORKDIR /work
RUN echo "$FROM_ENV $BUILD_ONLY $HOME" > env.txt && pwd > pwd.txt
ARG BUILD_ONLY=overridden
ENV BUILD_ONLY=env-wins
RUN echo "$BUILD_ONLY" > /work/env-wins.txt
USER app
WORKDIR /home/app/sub
RUN touch mine && id -u > uid.txt && id -g > gid.txt && echo "$HOME" > home.txt
USER app:staff
RUN touch /home/app/sub/staff-owned
USER root
SHELL ["/bin/sh", "-e", "-c"]
RUN echo "shell: $-" | tr -d 'hBmi' > /shell.txt
RUN ["/bin/sh", "-c", "echo exec-form > /exec.txt"]
RUN ["touch", "/exec-path-lookup"]
