# The shop binary for compose.yaml: one image, the subcommand picks the worker.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p shop

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 shop
COPY --from=build /src/target/release/shop /usr/local/bin/shop
USER shop
ENTRYPOINT ["/usr/local/bin/shop"]
