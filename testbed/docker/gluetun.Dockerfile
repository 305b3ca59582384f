# acevisor-testbed/gluetun:dev -- the fake Gluetun control server (see testbed/README.md).
# Build context: a directory holding only the static `fake-gluetun` binary (build-images.sh).
FROM scratch
COPY fake-gluetun /fake-gluetun
EXPOSE 8000
# Fast for tests. The real Gluetun image uses --interval=5s --timeout=5s --start-period=10s --retries=3.
HEALTHCHECK --interval=1s --timeout=1s --start-period=5s --retries=2 CMD ["/fake-gluetun","healthcheck"]
ENTRYPOINT ["/fake-gluetun"]
