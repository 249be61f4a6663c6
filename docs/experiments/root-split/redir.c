/* Experiment only: the ceiling of a tc BPF shortcut (no NAT, no netfilter). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>

#define SEC(n) __attribute__((section(n), used))
static long (*bpf_redirect_neigh)(__u32 ifindex, void *params, int plen, __u64 flags) = (void *)152;
static long (*bpf_redirect_peer)(__u32 ifindex, __u64 flags) = (void *)155;

/* patched by c.sh via -D */
#ifndef UPLINK
#define UPLINK 0
#endif
#ifndef KIDLINK
#define KIDLINK 0
#endif
#define KID_IP 0x0200f20a /* 10.242.0.2, network order on little endian */

SEC("tc_up") int up(struct __sk_buff *skb)
{
	void *d = (void *)(long)skb->data, *e = (void *)(long)skb->data_end;
	struct ethhdr *eth = d;
	if ((void *)(eth + 1) > e || eth->h_proto != __builtin_bswap16(ETH_P_IP))
		return TC_ACT_OK;
	return bpf_redirect_neigh(UPLINK, 0, 0, 0);
}

SEC("tc_down") int down(struct __sk_buff *skb)
{
	void *d = (void *)(long)skb->data, *e = (void *)(long)skb->data_end;
	struct ethhdr *eth = d;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > e || eth->h_proto != __builtin_bswap16(ETH_P_IP) || ip->daddr != KID_IP)
		return TC_ACT_OK;
	return bpf_redirect_peer(KIDLINK, 0);
}
char _license[] SEC("license") = "GPL";
