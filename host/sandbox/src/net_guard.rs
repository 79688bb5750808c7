//! `wasi:sockets/{tcp,udp}-create-socket` for attempts: no socket at all without a `net`
//! grant, and with one at most `max_sockets` (and `max_descriptors`) open at once. Each
//! refusal is recorded; the rest is wasmtime-wasi's implementation.

use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::p2::bindings::sockets::network::{self, ErrorCode, IpAddressFamily};
use wasmtime_wasi::p2::bindings::sockets::{tcp_create_socket, udp_create_socket};
use wasmtime_wasi::p2::{SocketError, SocketResult, TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::WasiSocketsCtxView;

use crate::attempt::AttemptState;
use crate::guard::Guard;

pub(crate) struct GuardedNet<'a> {
    view: WasiSocketsCtxView<'a>,
    guard: &'a mut Guard,
}

pub(crate) struct NetData;

impl HasData for NetData {
    type Data<'a> = GuardedNet<'a>;
}

pub(crate) fn view(s: &mut AttemptState) -> GuardedNet<'_> {
    let (wasi, table, guard) = s.split();
    GuardedNet {
        view: WasiSocketsCtxView {
            ctx: wasi.sockets(),
            table,
        },
        guard,
    }
}

impl GuardedNet<'_> {
    /// `Ok` with a reservation, or the error the guest gets (the refusal is recorded).
    fn admit(&mut self, what: &str) -> Result<(), ErrorCode> {
        if !self.guard.net_granted {
            self.guard
                .denials
                .record("net", format!("{what}: the step has no network grant"));
            return Err(ErrorCode::AccessDenied);
        }
        if !self.guard.reserve(self.view.table, true, what) {
            return Err(ErrorCode::NewSocketLimit);
        }
        Ok(())
    }

    fn created<T>(&mut self, r: SocketResult<Resource<T>>) -> SocketResult<Resource<T>> {
        match &r {
            Ok(socket) => self.guard.opened_socket(socket.rep()),
            Err(_) => self.guard.unreserve(),
        }
        r
    }
}

impl network::Host for GuardedNet<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        network::Host::convert_error_code(&mut self.view, error)
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        network::Host::network_error_code(&mut self.view, err)
    }
}

impl network::HostNetwork for GuardedNet<'_> {
    fn drop(&mut self, this: Resource<network::Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.view, this)
    }
}

impl tcp_create_socket::Host for GuardedNet<'_> {
    fn create_tcp_socket(
        &mut self,
        address_family: IpAddressFamily,
    ) -> SocketResult<Resource<TcpSocket>> {
        self.admit("create-tcp-socket")?;
        let r = tcp_create_socket::Host::create_tcp_socket(&mut self.view, address_family);
        self.created(r)
    }
}

impl udp_create_socket::Host for GuardedNet<'_> {
    async fn create_udp_socket(
        &mut self,
        address_family: IpAddressFamily,
    ) -> SocketResult<Resource<UdpSocket>> {
        self.admit("create-udp-socket")?;
        let r = udp_create_socket::Host::create_udp_socket(&mut self.view, address_family).await;
        self.created(r)
    }
}
