//! The virtual service of a packet.

use aya_ebpf::bindings::xdp_action::XDP_PASS;
use lb_common::{counter, ConnKey, ServiceKey, ServiceValue};

use crate::{maps::SERVICES, stats::count};

/// The service of a packet and the virtual port it was found under (the
/// packet's port, or 0 for a port-0 service), in network order.
#[inline(always)]
pub(crate) fn lookup_service(key: &ConnKey) -> Result<(ServiceValue, u16), u32> {
    let mut sk = ServiceKey {
        addr: key.daddr,
        port: key.dport,
        proto: key.proto,
        family: key.family,
    };
    if let Some(v) = unsafe { SERVICES.get(&sk) } {
        return Ok((*v, key.dport));
    }
    // A port-0 service matches every port of the VIP.
    sk.port = 0;
    match unsafe { SERVICES.get(&sk) } {
        Some(v) => Ok((*v, 0)),
        None => {
            count(counter::PASS_NOT_VIP);
            Err(XDP_PASS)
        }
    }
}
