# Heredocs: a lone one is the script, one read by the command, several,
# and a script with #! run as a file. run-heredoc.buildah.Dockerfile runs
# the same commands inline (buildah 1.28 has no heredocs).
ARG BASE
FROM ${BASE}
RUN <<EOF
mkdir -p /hd
echo "first $((1+1))" > /hd/one
EOF
RUN <<EOF sh
echo from-stdin > /hd/two
EOF
RUN cat <<A > /hd/three && cat <<'B' > /hd/four
alpha $HOME
A
beta $HOME
B
RUN <<EOF
#!/bin/sh
echo "shebang $0" > /hd/five
EOF
