# Shell forms of ENTRYPOINT, CMD and HEALTHCHECK, and folders WORKDIR makes for a USER.
FROM scratch
COPY etc/passwd etc/group /etc/
ENV NAME=world
ENTRYPOINT /bin/app --name $NAME
CMD echo "hello $NAME"
HEALTHCHECK --interval=1m30s CMD check || exit 1
STOPSIGNAL 9
USER 1000
WORKDIR /numeric/user
USER app:staff
WORKDIR /named/user
USER web
WORKDIR /primary/group
WORKDIR /named
USER 77:web
WORKDIR /unknown/group
USER nosuch
WORKDIR /unknown/user
USER web
