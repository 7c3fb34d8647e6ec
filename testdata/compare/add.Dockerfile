# ADD extracts local tar archives (found by content) and copies other files.
FROM scratch
ADD archive.tar /x/
ADD archive.tar.gz /y
ADD plain.txt /p/
ADD plain.txt /p/renamed.txt
ADD --chown=5:6 archive.tar /owned/
ADD --chmod=600 archive.tar /chmodded/
ADD --chown=5:6 --chmod=600 plain.txt /owned-plain/
ADD files/one.txt files/two.txt /many/
ADD not-a-tar.tar /raw/
WORKDIR /existing
ADD archive.tar /existing/
