# SHELL changes what a later shell-form command runs under.
FROM scratch
SHELL ["/bin/ash", "-eo", "pipefail", "-c"]
CMD run --this | tee /log
ENTRYPOINT ["/init"]
