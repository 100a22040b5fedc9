# Hodei's container image: the server and the agent (`hodei server`, `hodei agent`).
#
#   docker build -t hodei .                      # with access to a registry
#   ./scripts/hodei-image                        # the same image on a machine without one
#
#   docker run -p 8080:8080 -v hodei-data:/var/lib/hodei hodei server --listen 0.0.0.0:8080
#   docker run -v hodei-agent:/var/lib/hodei hodei agent --server http://SERVER:8080 --token hodei_…
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin hodei

FROM debian:bookworm-slim
COPY deploy/image-setup.sh /tmp/image-setup.sh
RUN sh /tmp/image-setup.sh && rm /tmp/image-setup.sh
COPY --from=build /src/target/release/hodei /usr/local/bin/hodei
USER hodei
WORKDIR /home/hodei
ENV HODEI_DATA=/var/lib/hodei
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/hodei"]
CMD ["server", "--listen", "0.0.0.0:8080"]
