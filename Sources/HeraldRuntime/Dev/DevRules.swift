/// The rules `herald dev` runs: immediate, delayed, cancelled and counting scenarios of a
/// card-delivery shop (no shaping policies yet).
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
      cart_reminder:
        body: "Hi {{ user.nickname | default: 'there' }}, {{ event.sku }} is still in your cart."
      delivery_apology:
        body: "Sorry, the code for order {{ event.order_id }} is late. We are on it."
      account_locked:
        body: "Three sign-ins failed within 10 minutes; we locked your account for your safety."

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

      - id: cart-abandoned
        on: behavior.cart_add
        where: "event.amount > 0"
        wait: 1h
        cancel_on: [orders.order_created, behavior.checkout_start]
        goal: { event: orders.order_paid, within: 24h }
        notify: { template: cart_reminder, channels: [in_app, sms] }

      - id: code-not-delivered
        on: orders.order_paid
        wait: 5m
        cancel_on: { events: [orders.card_delivered], match: [order_id] }
        notify: { template: delivery_apology, priority: high, escalate: true }

      - id: login-risk
        on: behavior.login_failed
        threshold: { count: 3, within: 10m, reset_on: [behavior.login_success] }
        notify: { template: account_locked, priority: urgent }
    """
}
