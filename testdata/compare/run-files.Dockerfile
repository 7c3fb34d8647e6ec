# RUN's file changes: created, changed, deleted (whiteouts), folders
# replaced (opaque), a file replaced by a folder and back, modes, owners,
# symbolic and hard links, a same-size rewrite with its mtime put back.
# Built FROM the busybox base the tests push. (A file hard-linked in an
# earlier step and written through one name in a later one is not here:
# buildah's vfs changes both names, overlayfs, as Docker's overlay2 and
# BuildKit, only the one written.)
ARG BASE
FROM ${BASE}
RUN mkdir -p /data/keep /data/gone /data/swap-dir /data/replace/sub \
 && echo one > /data/keep/a && echo two > /data/keep/b && echo three > /data/gone/c \
 && echo file > /data/swap-file && echo inner > /data/swap-dir/inner \
 && echo lower > /data/replace/sub/f && echo same > /data/rewrite \
 && echo pair > /data/pair-a && ln /data/pair-a /data/pair-b
RUN echo changed > /data/keep/a \
 && rm -rf /data/gone /bin/ping /bin/vi \
 && rm /data/swap-file && mkdir /data/swap-file && echo now-a-dir > /data/swap-file/x \
 && rm -rf /data/swap-dir && echo now-a-file > /data/swap-dir \
 && rm -rf /data/replace && mkdir -p /data/replace && echo upper > /data/replace/new \
 && chmod 600 /data/keep/b && chown 1000:50 /data/keep/b \
 && chmod 2750 /data && chown app /data/swap-file \
 && ln -s keep/a /data/link && ln -s /nowhere /data/dangling && ln /data/keep/a /data/hard \
 && touch -r /data/rewrite /ref && echo SAME > /data/rewrite && touch -r /ref /data/rewrite && rm /ref
RUN mkdir -p /var/empty-dir && rmdir /usr && mkdir /usr && touch /usr/fresh
