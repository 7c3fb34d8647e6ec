# Metadata instructions; built with --build-arg VERSION=2.5 --build-arg FLAVOR=fancy.
ARG BASE=scratch
ARG VERSION=1.0
FROM ${BASE}
ARG VERSION
ARG FLAVOR=plain
ARG UNUSED_DEFAULT=ignored
ENV APP_VERSION=$VERSION \
    FLAVOR=${FLAVOR}
ENV LEGACY legacy form with  spaces
ENV DEF=${UNSET:-fallback} ALT=${FLAVOR:+set} NEVER=${UNSET:+never} KEEP=${FLAVOR:-other}
ENV COMBINED="${APP_VERSION}-${FLAVOR}" SINGLE='$NOT_EXPANDED'
LABEL version="$APP_VERSION" "quoted key"="a b" simple=1
LABEL multi.one=1 \
      multi.two="two words"
WORKDIR /a
WORKDIR b
WORKDIR ../c
WORKDIR $FLAVOR/deep
EXPOSE 80 53/udp 8000-8002 443/TCP
EXPOSE 80/tcp
USER 1000:1000
VOLUME ["/data", "/logs"]
VOLUME /cache /var/lib/thing
ENTRYPOINT ["/bin/app", "--flag"]
CMD ["serve", "$APP_VERSION"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/bin/check", "--quick"]
ONBUILD COPY . /src
ONBUILD LABEL child=yes
