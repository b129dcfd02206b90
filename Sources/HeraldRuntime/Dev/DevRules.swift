/// The rules `herald dev` runs: the immediate scenarios of a card-delivery shop.
public enum DevRules {
    public static let yaml = """
    version: 1
    defaults:
      timezone: Asia/Shanghai
      channels: [in_app]

    templates:
      refund_notice:
        title: "Payment failed"
        body: "Payment for order {{ event.order_id }} failed; any charge is refunded within 3 days."
      card_code:
        body: "Your code: {{ event.card_code | mask }}"
      ticket_ack:
        body: "We received your message \\"{{ event.text | truncate: 40 }}\\" and will reply soon."
      security_alert:
        body: "A sign-in to your account failed from {{ event.ip }}. Was it you?"
      thanks:
        body: "Hi {{ user.nickname | default: 'there' }}, thanks for order {{ event.order_id | upper }}."

    rules:
      - id: payment-failed
        on: orders.payment_failed
        notify: { template: refund_notice, priority: high }

      - id: card-delivered
        on: orders.card_delivered
        notify: { template: card_code, channels: [in_app, sms] }

      - id: support-ack
        on: behavior.support_message
        notify: { template: ticket_ack, priority: high, escalate: true, tags: [support] }

      - id: login-failed
        on: behavior.login_failed
        notify: { template: security_alert, priority: urgent }

      - id: order-thanks
        on: orders.order_paid
        shops: [s1, s42]
        notify: { template: thanks, priority: low }
    """
}
