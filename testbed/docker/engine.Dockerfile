# acevisor-testbed/engine:dev -- the fake AceStream engine (see testbed/README.md).
# Build context: a directory holding only the static `fake-engine` binary (build-images.sh).
# The CMD is a sentinel for "the image's own command": a container created without a command
# gets it, so the fake knows whether a template replaced the command (FAKE_ENGINE_PROFILE=jopsis
# then starts no engine, as the real jopsis image would not).
FROM scratch
COPY fake-engine /fake-engine
EXPOSE 6878
ENTRYPOINT ["/fake-engine"]
CMD ["fake-engine:image-default-cmd"]
