# A later stage inherits the config; HEALTHCHECK NONE and ENTRYPOINT reset parts of it.
FROM scratch AS base
HEALTHCHECK --interval=5s --timeout=2s CMD ["/bin/true"]
CMD ["base-cmd"]
ENV FROM_BASE=1
WORKDIR /base
FROM base
HEALTHCHECK NONE
ENTRYPOINT ["/entry"]
ENV FROM_CHILD=2
WORKDIR sub
