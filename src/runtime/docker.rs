//! `DockerRuntime`: `ContainerRuntime` over the Docker API (bollard), with a timeout on every call.
