package network

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Containers' veths have a large MTU (DefaultMTU), so their TCP handshakes advertise a segment
// size (MSS) of almost 64 KiB. A far server on a jumbo-frame network behind a 1500-byte path
// would then send segments too large for the path, and lose them wherever ICMP "fragmentation
// needed" is filtered. The mss chain lowers the MSS option of every SYN and SYN-ACK the machine
// forwards to what the route it leaves by can carry (nft: tcp flags syn tcp option maxseg
// size set rt mtu), as a host with that route's MTU would have advertised.

// mssClamp adds the forward hook's mss chain to the inet table.
func (n *nft) mssClamp(c *nftables.Conn) {
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "mss", Table: n.inet, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityMangle, Policy: &accept})
	c.AddRule(&nftables.Rule{Table: n.inet, Chain: ch, Exprs: join(l4proto(unix.IPPROTO_TCP), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x02}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0}},
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 2, Size: 2},
		&expr.Exthdr{SourceRegister: 1, Type: 2, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt},
	})})
}
