# COPY semantics: owners, modes, destinations, wildcards, links and .dockerignore.
FROM scratch
COPY etc/passwd etc/group /etc/
COPY --chown=1001 files/one.txt /num/
COPY --chown=1001:1002 files/one.txt /numgrp/deep/one.txt
COPY --chown=app files/one.txt /named/
COPY --chown=app:staff files/ /named-dir/
COPY --chown=web:50 tree /mixed/new/parents/
COPY --chmod=600 files/one.txt /modes/
COPY --chmod=750 tree /modes/tree
COPY files/one.txt files/two.txt /multi/
COPY files/*.txt files/*.tmp /glob/
COPY files/t?o.txt /glob2/
COPY files/one.txt /renamed.txt
COPY files/one.txt /deep/er/renamed.txt
WORKDIR /existing
COPY files/one.txt /existing
COPY files/two.txt .
COPY files/run.sh ./script
COPY tree /tree-contents/
COPY tree/sub /subcopy
COPY --chown=5:6 tree /existing/
COPY tree /tree-noslash
COPY tree/. /tree-dot/
COPY links /links/
COPY links/rel /followed
COPY . /whole/
COPY keepdir/ /keepdir-slash
COPY special /special/
COPY files/one.txt files/nomatch* /wild/
