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
# Compressed archives are extracted whatever compresses them; compressed
# files that are not tars are copied as they are.
ADD archive.tar.xz archive.tar.bz2 archive.tar.zst /compressed/
ADD notes.txt.xz notes.txt.bz2 notes.txt.zst notes.txt.gz /notes/
# FIFOs are kept; climbing and absolute names land inside the destination;
# a file replaces a directory.
ADD special.tar /special-tar/
ADD evil.tar /evil/
COPY files/one.txt /replaced/dir/keep
ADD dirfile.tar /replaced/
