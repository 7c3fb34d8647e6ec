# The steps of run-heredoc.Dockerfile without heredocs, for buildah 1.28.
ARG BASE
FROM ${BASE}
RUN mkdir -p /hd && echo "first $((1+1))" > /hd/one
RUN echo from-stdin > /hd/two
RUN echo "alpha $HOME" > /hd/three && echo 'beta $HOME' > /hd/four
RUN echo "shebang /dev/pipes/EOF" > /hd/five
