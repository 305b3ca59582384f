# acevisor-testbed/engine:dev -- the fake AceStream engine (see testbed/README.md).
# Build context: a directory holding only the static `fake-engine` binary (build-images.sh).
FROM scratch
COPY fake-engine /fake-engine
EXPOSE 6878
ENTRYPOINT ["/fake-engine"]
