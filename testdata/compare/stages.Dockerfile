# COPY --from an earlier stage keeps owners and modes unless told otherwise.
FROM scratch AS build
COPY etc/passwd /etc/passwd
COPY --chown=1001:1002 files/ /out/
COPY --chmod=700 files/one.txt /out/bin/tool
COPY links /out/links
WORKDIR /out/wd
FROM scratch
COPY --from=build /out /app
COPY --from=build /out/one.txt /single
COPY --from=build --chown=7:8 /out/ /owned/
COPY --from=0 /etc/passwd /etc/
COPY --from=build /out/*.txt /globbed/
COPY --from=build /out/links/rel /via-link
