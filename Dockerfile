# syntax=docker/dockerfile:1
# lynq's image: `docker build -t lynq:latest .` — a static-enough Rust binary (rustls, no OpenSSL) on
# distroless cc (glibc and CA certificates only), running as the nonroot user 65532.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep crates and build output between builds; the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lynq \
    && install -m 0755 target/release/lynq /usr/local/bin/lynq

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/lynq /usr/local/bin/lynq
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/lynq"]
CMD ["run"]
